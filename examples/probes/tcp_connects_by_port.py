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

from gespann.probes.authoring import (
    OTHER,
    R0,
    R1,
    R2,
    R7,
    R10,
    U32,
    Arguments,
    BuildTarget,
    H,
    Probe,
    Program,
    ReadContext,
    Reader,
    Series,
    W,
    capped_count_maps,
    counter,
    emit_capped_count,
    emit_netns_check,
    emit_read_field,
    read_capped_counts,
    socket_state,
)

#: Remote ports told apart; connections to more ports than this count under "other".
CAPACITY = 1024
PORTS = "connects_by_port"
OVERFLOW = "connects_other"

CONNECTS = counter("tcp_connects_by_remote_port_total", ("remote_port",),
                   "TCP connections this host opened (SYN_SENT to ESTABLISHED), by remote port; ports past "
                   "the probe's capacity count as 'other'.", dogstatsd="tcp.connects_by_remote_port")


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    port = p.frame.alloc("remote port", size=4)
    scratch = p.frame.alloc("read scratch", size=8)
    out = p.new_label("out")
    args.load(p, R2, "protocol")
    p.jne(R2, socket_state.IPPROTO_TCP, out)
    args.load(p, R2, "oldstate")
    p.jne(R2, socket_state.SYN_SENT, out)
    args.load(p, R2, "newstate")
    p.jne(R2, socket_state.ESTABLISHED, out)
    args.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    emit_read_field(p, R1, R7, target.kernel_types.field("sock_common.skc_dport"), scratch, args.btf_pointers)
    p.st(W, R10, port.at(), 0)  # the key is a u32: the port (network order) and two zero bytes
    p.stx(H, R10, port.at(), R1)
    emit_capped_count(p, PORTS, OVERFLOW, port)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class ConnectsByPort(Reader):
    """The map's ports, each as a series; the overflow as remote_port="other"."""

    def __init__(self, context: ReadContext):
        self._ports, self._other = context.maps[PORTS], context.maps[OVERFLOW]

    def series(self) -> Series:
        return {CONNECTS: read_capped_counts(self._ports, self._other,
                                             lambda port: CONNECTS.series(remote_port=str(socket.ntohs(port))),
                                             CONNECTS.series(remote_port=OTHER))}


PROBE = Probe(
    name="tcp_connects_by_port",
    summary="TCP connections opened, by remote port (an example of a probe outside gespann's tree)",
    flavours=socket_state.FLAVOURS,
    body=body,
    derived=socket_state.DERIVED,
    maps=capped_count_maps(PORTS, OVERFLOW, U32, CAPACITY, "conn_port"),
    metrics=(CONNECTS,),
    reader=ConnectsByPort,
)
