"""TCP connections this host opened, counted by the remote port: a probe that lives outside gespann's tree.

Name this file in the config and `gespann run` attaches it beside its own probes:

    extra_probes:
      - /etc/gespann/probes/tcp_connects_by_port.py

It exports `gespann_tcp_connects_by_remote_port_total{remote_port}` (and a
DogStatsD `tcp.connects_by_remote_port`). Everything a probe is sits in this one file: where
it attaches (the flavours of sock:inet_sock_set_state that gespann's own TCP
probes use), the program, its maps, its metric, and the reader that turns the
maps into the metric's series at each scrape.

The count is kept per remote port in a hash map of CAPACITY ports. A port
that finds the map full is counted under remote_port="other", so nothing is
lost silently.
"""

from __future__ import annotations

import socket

from asm import DW, H, R0, R1, R2, R7, R10, Program

from gespann.bpf.maps import U32, U64, ArrayMap, HashMap
from gespann.bpf.syscall import UpdateFlags
from gespann.figures import Series, counter, labels
from gespann.probes import BuildTarget, Probe, ReadContext, Reader
from gespann.probes.toolkit.arguments import Arguments
from gespann.probes.toolkit.kernel_memory import emit_read_field
from gespann.probes.toolkit.map_calls import emit_increment, emit_map_lookup, emit_map_update
from gespann.probes.toolkit.netns import emit_netns_check
from gespann.probes.toolkit.socket_state import DERIVED, ESTABLISHED, FLAVOURS, IPPROTO_TCP, SYN_SENT

#: Remote ports told apart; connections to more ports than this count under "other".
CAPACITY = 1024
PORTS = "connects_by_port"
OTHER = "connects_other"

CONNECTS = counter("tcp_connects_by_remote_port_total", ("remote_port",),
                   "TCP connections this host opened (SYN_SENT to ESTABLISHED), by remote port; ports past "
                   "the probe's capacity count as 'other'.", dogstatsd="tcp.connects_by_remote_port")


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    port = p.frame.alloc("remote port", size=4)
    one = p.frame.alloc("one", size=8)
    scratch = p.frame.alloc("read scratch", size=8)
    out = p.new_label("out")
    args.load(p, R2, "protocol")
    p.jne(R2, IPPROTO_TCP, out)
    args.load(p, R2, "oldstate")
    p.jne(R2, SYN_SENT, out)
    args.load(p, R2, "newstate")
    p.jne(R2, ESTABLISHED, out)
    args.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    emit_read_field(p, R1, R7, target.kernel_types.field("sock_common.skc_dport"), scratch, args.btf_pointers)
    p.st(DW, R10, port.at(), 0)  # the key is a u32: the port (network order) and two zero bytes
    p.stx(H, R10, port.at(), R1)
    # Counted where the port has its entry; a new port gets one, unless the map is full.
    emit_map_lookup(p, PORTS, port)
    counted = p.new_label("counted")
    p.jne(R0, 0, counted)
    p.st(DW, R10, one.at(), 1)
    emit_map_update(p, PORTS, port, one, UpdateFlags.NOEXIST)
    p.jeq(R0, 0, out)
    emit_map_lookup(p, PORTS, port)  # another CPU made it first, or the map is full
    p.jne(R0, 0, counted)
    p.st(DW, R10, port.at(), 0)
    emit_increment(p, OTHER, port)
    p.ja(out)
    p.label(counted)
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class ConnectsByPort(Reader):
    """The map's ports, each as a series; the overflow as remote_port="other"."""

    def __init__(self, context: ReadContext):
        self._ports, self._other = context.maps[PORTS], context.maps[OTHER]

    def series(self) -> Series:
        counts = {labels(remote_port=str(socket.ntohs(port))): n for port, n in self._ports.items()}
        other = self._other[0]
        if other:
            counts[labels(remote_port="other")] = other
        return {CONNECTS.name: counts}


PROBE = Probe(
    name="tcp_connects_by_port",
    summary="TCP connections opened, by remote port (an example of a probe outside gespann's tree)",
    flavours=FLAVOURS,
    body=body,
    derived=DERIVED,
    maps={PORTS: lambda: HashMap(U32, U64, CAPACITY, name="gsp_conn_ports"),
          OTHER: lambda: ArrayMap(U64, 1, name="gsp_conn_other")},
    metrics=(CONNECTS,),
    reader=ConnectsByPort,
)
