"""Connection attempts this host refused because nothing listens: by protocol and local port.

A TCP SYN to a port where no socket listens is answered with a reset, and a
UDP datagram to a port no socket is bound to with an ICMP port unreachable;
either way the kernel then frees the packet as a drop with reason NO_SOCKET
(skb:kfree_skb, 5.17+). So one drop reason, read where the kernel decided it,
counts exactly the SYNs `Tcp OutRsts` answers for closed ports and every
datagram `Udp NoPorts` counts (ICMP rate limits may leave some unanswered; the
kernel counts those too, and so does this). TCP segments that are not a first
SYN (a stray ACK, a late segment of a closed connection) are refused as well,
but are no connection attempt, and are left out.

Counts are kept by (protocol, local port) in a hash map of CAPACITY ports
(config limits.refused_ports); a port that finds the map full counts under
local_port="other", per protocol, and is logged once naming the key. Before
5.17 the kernel passes no drop reason: the probe is left out there (it is not
required), and `gespann check` says so.
"""

from __future__ import annotations

import logging

from gespann.probes.authoring import (
    OTHER,
    R0,
    R1,
    R7,
    R8,
    R9,
    R10,
    Arguments,
    B,
    BtfTracepoint,
    BuildTarget,
    FeatureUnsupportedError,
    Probe,
    Program,
    RawTracepoint,
    ReadContext,
    Reader,
    Record,
    RecordCodec,
    Series,
    Tracepoint,
    W,
    capped_count_maps,
    counter,
    emit_capped_count,
    emit_ip_protocol,
    emit_packet_netns_check,
    emit_read_transport_header,
    read_capped_counts,
    u32,
)

log = logging.getLogger(__name__)

COUNTS, OVERFLOW = "refused_ports", "refused_other"
#: Local ports told apart, TCP's and UDP's together; the rest count under "other".
CAPACITY = 1024
PROTOCOLS = ("tcp", "udp")
IPPROTO_TCP, IPPROTO_UDP = 6, 17
KEY = Record("refused_key", [("protocol", u32), ("port", u32)])
#: The TCP header's flags byte, and the flags of a first SYN.
TCP_FLAGS, SYN, RST, ACK = 13, 0x02, 0x04, 0x10
NO_SOCKET = "SKB_DROP_REASON_NO_SOCKET"

REFUSED = counter(
    "inbound_refused_total", ("protocol", "local_port"),
    "Connection attempts this host refused because nothing listens on the port: TCP SYNs answered with a reset, "
    "UDP datagrams answered with ICMP port unreachable, by local port; ports past limits.refused_ports count "
    "under local_port 'other'.", dogstatsd="inbound.refused")

FLAVOURS = (
    BtfTracepoint("kfree_skb", args=("skb", "location", "reason")),
    RawTracepoint("kfree_skb", args=("skb", "location", "reason")),
    Tracepoint("skb", "kfree_skb", fields={"skb": "skbaddr", "reason": "reason"}),
)


def no_socket_reason(target: BuildTarget) -> int:
    """The value of the kernel's NO_SOCKET drop reason, from its BTF; FeatureUnsupportedError without one."""
    try:
        reasons = target.kernel_types.enum("skb_drop_reason")
    except (KeyError, AttributeError):
        reasons = None
    value = next((value for value, name in (reasons or {}).items() if name == NO_SOCKET), None)
    if value is None:
        raise FeatureUnsupportedError("drop reasons on kfree_skb (SKB_DROP_REASON_NO_SOCKET)", "5.17",
                                      reason="the kernel's BTF names no such reason")
    return value


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    types, direct = target.kernel_types, args.btf_pointers
    if types.optional_field("sk_buff.transport_header") is None:
        raise FeatureUnsupportedError("sk_buff.transport_header in the kernel types", "2.6.22",
                                      reason="the kernel types (a vendored table?) do not carry it")
    key, scratch, header = (p.frame.alloc("key", KEY), p.frame.alloc("scratch", size=8),
                            p.frame.alloc("transport header", size=16))
    out, udp, count = p.new_label("out"), p.new_label("udp"), p.new_label("count")
    args.load(p, R1, "reason")
    p.jne(R1, no_socket_reason(target), out)  # the first instructions: any other free costs these only
    args.load(p, R7, "skb")
    if target.netns is not None:
        emit_packet_netns_check(p, R7, types, target.netns, out, scratch, direct)
    emit_ip_protocol(p, R8, R7, types, scratch, header, out, direct)
    emit_read_transport_header(p, R7, types, scratch, header, 16, direct)
    p.jeq(R8, IPPROTO_UDP, udp)
    p.jne(R8, IPPROTO_TCP, out)
    p.ldx(B, R1, R10, header.at() + TCP_FLAGS)
    p.and_(R1, SYN | RST | ACK)
    p.jne(R1, SYN, out)
    p.mov(R9, PROTOCOLS.index("tcp"))
    p.ja(count)
    p.label(udp)
    p.mov(R9, PROTOCOLS.index("udp"))
    p.label(count)
    p.stx(W, R10, key.at("protocol"), R9)
    p.ldx(W, R1, R10, header.at())  # source port, destination port: network order
    p.rsh(R1, 16)
    p.to_be(R1, 16)
    p.stx(W, R10, key.at("port"), R1)
    emit_capped_count(p, COUNTS, OVERFLOW, key, slot=R9)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class RefusedPorts(Reader):
    """Each (protocol, local port) refused at least once; the overflow per protocol as local_port="other"."""

    def __init__(self, context: ReadContext):
        self._counts, self._overflow = context.maps[COUNTS], context.maps[OVERFLOW]
        self._overflow_logged = False

    def series(self) -> Series:
        counts = read_capped_counts(
            self._counts, self._overflow,
            lambda key: REFUSED.series(protocol=PROTOCOLS[key.protocol], local_port=str(key.port)),
            lambda slot: REFUSED.series(protocol=PROTOCOLS[slot], local_port=OTHER))
        if not self._overflow_logged and any(dict(labels)["local_port"] == OTHER for labels in counts):
            self._overflow_logged = True
            log.warning("more local ports refused connections than the probe keeps (%d); the rest count "
                        "under local_port=%s: raise limits.refused_ports to tell them apart",
                        self._counts.max_entries, OTHER)
        return {REFUSED: counts}


PROBE = Probe(
    name="inbound_refused",
    summary="connection attempts refused because nothing listens (TCP reset, UDP port unreachable), by local port",
    flavours=FLAVOURS,
    body=body,
    maps=capped_count_maps(COUNTS, OVERFLOW, RecordCodec(KEY), CAPACITY, "refused", overflow_slots=len(PROTOCOLS)),
    protocol=None,
    metrics=(REFUSED,),
    reader=RefusedPorts,
    required=False,
)
