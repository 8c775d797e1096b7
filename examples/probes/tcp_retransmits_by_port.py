"""TCP segments this host retransmitted, counted by the remote port: a probe that lives outside gespann's tree.

Name this file in the config and `gespann run` attaches it beside its own probes:

    extra_probes:
      - /etc/gespann/probes/tcp_retransmits_by_port.py

It exports `gespann_tcp_retransmitted_segments_by_remote_port_total{remote_port}`
(DogStatsD `tcp.retransmitted_segments_by_remote_port`).

What it counts is what the kernel's `Tcp: RetransSegs` counts, less `TcpExt: TCPRetransFail`:
segments, not packets. The kernel retransmits in __tcp_retransmit_skb(), which adds
tcp_skb_pcount(skb) to RetransSegs (a TSO/GSO buffer holds several segments) and then
fires tcp:tcp_retransmit_skb. So each event adds the buffer's segment count,
TCP_SKB_CB(skb)->tcp_gso_segs, which lives in the skb's control block `cb`. Older
kernels fire the event only for a retransmission handed to the IP layer; newer ones
fire it for every attempt, with its error as `err` (a field of the tracefs record
then), and only `err == 0` counts here. SYN
retransmissions count (they take the same path); SYN-ACKs do not (tcp_rtx_synack fires
tcp:tcp_retransmit_synack instead, though RetransSegs counts them too).

Ports past CAPACITY count under remote_port="other", so the sum is always the total.
"""

from __future__ import annotations

import socket

from gespann.probes.authoring import (
    DW,
    OTHER,
    R0,
    R1,
    R2,
    R7,
    R8,
    R10,
    U32,
    Arg,
    Arguments,
    BtfTracepoint,
    BuildTarget,
    H,
    KernelNeeds,
    Probe,
    Program,
    RawTracepoint,
    ReadContext,
    Reader,
    Series,
    Tracepoint,
    W,
    capped_count_maps,
    counter,
    emit_capped_count,
    emit_netns_check,
    emit_read_bytes,
    emit_read_field,
    event_fields,
    read_capped_counts,
)

#: Remote ports told apart; retransmissions to more ports than this count under "other".
CAPACITY = 1024
PORTS = "retransmits_by_port"
OVERFLOW = "retransmits_other"

RETRANSMITTED = counter(
    "tcp_retransmitted_segments_by_remote_port_total", ("remote_port",),
    "TCP segments this host retransmitted (Tcp RetransSegs less TcpExt TCPRetransFail), by the connection's "
    "remote port; ports past the probe's capacity count as 'other'.",
    dogstatsd="tcp.retransmitted_segments_by_remote_port")

#: TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, int err]): `err` on newer kernels only.
ARGS = ("sk", "skb", Arg.c_int("err"))


#: Fields outside gespann's manifest, declared here and resolved from the running kernel's BTF with it.
NEEDS = KernelNeeds(fields=("sk_buff.cb", "tcp_skb_cb.tcp_gso_segs"))


def segments_offset(target: BuildTarget) -> int:
    """Where TCP_SKB_CB(skb)->tcp_gso_segs is in a struct sk_buff: the control block, then its field."""
    types = target.kernel_types
    return types.field("sk_buff.cb").offset + types.field("tcp_skb_cb.tcp_gso_segs").offset


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    port = p.frame.alloc("remote port", size=4)
    segments = p.frame.alloc("segments", size=8)
    scratch = p.frame.alloc("read scratch", size=8)
    out = p.new_label("out")
    if "err" in event_fields("tcp", "tcp_retransmit_skb"):
        args.load(p, R2, "err")
        p.jne(R2, 0, out)
    args.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    emit_read_field(p, R1, R7, target.kernel_types.field("sock_common.skc_dport"), scratch, args.btf_pointers)
    p.st(W, R10, port.at(), 0)  # the key is a u32: the port (network order) and two zero bytes
    p.stx(H, R10, port.at(), R1)
    args.load(p, R7, "skb")
    p.st(DW, R10, segments.at(), 0)
    emit_read_bytes(p, R7, segments_offset(target), 2, segments.at())  # u16 tcp_gso_segs
    p.ldx(H, R8, R10, segments.at())
    emit_capped_count(p, PORTS, OVERFLOW, port, amount=R8)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class RetransmitsByPort(Reader):
    """The map's ports, each as a series; the overflow as remote_port="other"."""

    def __init__(self, context: ReadContext):
        self._ports, self._other = context.maps[PORTS], context.maps[OVERFLOW]

    def series(self) -> Series:
        return {RETRANSMITTED: read_capped_counts(
            self._ports, self._other, lambda port: RETRANSMITTED.series(remote_port=str(socket.ntohs(port))),
            RETRANSMITTED.series(remote_port=OTHER))}


PROBE = Probe(
    name="tcp_retransmits_by_port",
    summary="TCP segments retransmitted, by remote port (an example of a probe outside gespann's tree)",
    flavours=(
        BtfTracepoint("tcp_retransmit_skb", args=ARGS),
        RawTracepoint("tcp_retransmit_skb", args=ARGS),
        Tracepoint("tcp", "tcp_retransmit_skb", fields={"sk": "skaddr", "skb": "skbaddr", "err": "err"}),
    ),
    body=body,
    maps=capped_count_maps(PORTS, OVERFLOW, U32, CAPACITY, "rtx_port"),
    kernel=NEEDS,
    metrics=(RETRANSMITTED,),
    reader=RetransmitsByPort,
)
