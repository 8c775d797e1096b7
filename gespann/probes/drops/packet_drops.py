"""Packets the kernel dropped, by protocol and by the kernel's own reason (skb:kfree_skb).

The kernel frees a packet it drops with kfree_skb, and since 5.17 says why: an
`enum skb_drop_reason`. The reason's name is read from the running kernel's
BTF, so a reason added by a newer kernel is reported by name with no release
of gespann's. Where the kernel passes no reason (before 5.17), every drop
counts under `unknown`; where it has reasons but no BTF to name them, under
the reason's number.

Not every kfree_skb is a drop: a packet freed after use passes SKB_CONSUMED
(6.2+), and the first instructions leave those, so the probe costs almost
nothing on traffic that is not dropped. Before 5.17 kfree_skb is the drop
path too (consume_skb frees what was used), so nothing needs leaving out.

The protocol is the packet's own (the IPv4 protocol or IPv6 next header: tcp,
udp, anything else `other`), or its socket's when it has no IP header yet.
Counts are kept per CPU in a hash map keyed by (protocol, reason), sized for
every reason of any kernel; a key it has no room for counts under reason
`other`, so no drop goes uncounted.
"""

from __future__ import annotations

from typing import Optional

from asm import DW, R0, R1, R7, R8, R9, R10, Program, Record, Slot, W, u32

from ...bpf.errors import BPFError
from ...bpf.maps import U64, PerCpuArrayMap, PerCpuHashMap
from ...bpf.syscall import UpdateFlags
from ...btf import KernelTypes
from ...figures import Series, counter, labels
from ...vocabulary import OTHER
from ..tcp.connections import (
    ADOPTED,
    CONNECTION_MAPS_WANTED,
    ENTRIES,
    ENTRY,
    MAP_NAME,
    adopted_map,
    connections_map,
    emit_lookup_adopted,
    emit_lookup_connection,
    entries_map,
)
from ..toolkit.arguments import Arguments
from ..toolkit.flavours import BtfTracepoint, RawTracepoint, Tracepoint, event_fields
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.map_calls import emit_increment, emit_map_lookup, emit_map_update
from ..toolkit.packets import emit_ip_protocol
from ..toolkit.probe import BuildTarget, CheckContext, CheckLine, Probe
from ..toolkit.reading import ReadContext, Reader
from ..toolkit.record_codec import RecordCodec
from ..udp.flows import emit_namespace
from .reasons import NO_REASON, DropReasons, reasons_available
from .reasons import enum as _enum

COUNTS = "drop_counts"
OVERFLOW = "drop_overflow"
#: Keys (protocol, reason) told apart: three protocols times every reason a kernel has (about 130 in 6.18).
CAPACITY = 1024
KEY = Record("drop_key", [("protocol", u32), ("reason", u32)])
#: Protocol indices in the key; IP protocol numbers map onto them.
PROTOCOLS = ("tcp", "udp", OTHER)
TCP_INDEX, UDP_INDEX, OTHER_INDEX = range(len(PROTOCOLS))
IPPROTO_TCP, IPPROTO_UDP = 6, 17
#: Frees that are not drops, by the enum's names.
NOT_DROPS = ("SKB_NOT_DROPPED_YET", "SKB_CONSUMED")

PACKETS_DROPPED = counter(
    "packets_dropped_total", ("protocol", "reason"),
    "Packets the kernel dropped, by protocol (tcp, udp, other) and the kernel's drop reason (enum skb_drop_reason, "
    "named from the running kernel's BTF; 'unknown' before 5.17; 'other' past the probe's map).",
    dogstatsd="packets.dropped")

#: Every kernel's arguments are a prefix of these: the reason came in 5.17, rx_sk (the socket a received
#: packet was for) in 6.11. Only those the running kernel passes are read.
FLAVOURS = (
    BtfTracepoint("kfree_skb", args=("skb", "location", "reason", "rx_sk")),
    RawTracepoint("kfree_skb", args=("skb", "location", "reason", "rx_sk")),
    Tracepoint("skb", "kfree_skb", fields={"skb": "skbaddr", "reason": "reason", "rx_sk": "rx_sk"}),
)


def carries(argument: str, types: Optional[KernelTypes]) -> bool:
    """Whether this kernel's kfree_skb passes `argument` ("reason", "rx_sk"), by its tracepoint's fields,
    which follow its arguments; without tracefs to read (a process without CAP_DAC_READ_SEARCH), by BTF:
    the reason comes with `enum skb_drop_reason`, and rx_sk is then taken as absent."""
    try:
        fields = event_fields("skb", "kfree_skb")
    except BPFError:
        return argument == "reason" and _enum(types) is not None
    return argument in fields


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    types = target.kernel_types
    direct = args.btf_pointers
    key, scratch, header = (p.frame.alloc("key", KEY), p.frame.alloc("scratch", size=8),
                            p.frame.alloc("protocol byte", size=8))
    out = p.new_label("out")
    if carries("reason", types):
        args.load(p, R1, "reason")
        for value in _not_drops(types):
            p.jeq(R1, value, out)  # the first instructions: a free that is no drop costs these only
        p.stx(W, R10, key.at("reason"), R1)
    else:
        p.st(W, R10, key.at("reason"), NO_REASON)
    args.load(p, R7, "skb")
    emit_read_field(p, R8, R7, types.field("sk_buff.sk"), scratch, direct)
    if target.netns is not None:
        _emit_namespace_check(p, types, target.netns, direct, scratch, out)
    _emit_protocol(p, types, direct, scratch, header)
    p.stx(W, R10, key.at("protocol"), R9)
    _emit_count(p, key, scratch)
    if target.records is not None:
        _emit_attribute(p, args, target, key, out)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


def _emit_attribute(p: Program, args: Arguments, target: BuildTarget, key: Slot, done: str) -> None:
    """Count the drop on its connection's entry, with its reason, where gespann follows the connection: the
    socket the kernel says a received packet was for (rx_sk, 6.11+), else the packet's own (sent ones)."""
    direct = args.btf_pointers
    socket, cookie, scratch = (p.frame.alloc("socket address", size=8), p.frame.alloc("cookie", size=8),
                               p.frame.alloc("attribution scratch", size=8))
    adopted, mark, owned = p.new_label("drop.adopted"), p.new_label("drop.mark"), p.new_label("drop.owned")
    if carries("rx_sk", target.kernel_types):
        args.load(p, R1, "rx_sk")
        p.jeq(R1, 0, owned)
        p.mov(R8, R1)
    p.label(owned)
    p.jeq(R8, 0, done)
    p.stx(DW, R10, socket.at(), R8)
    emit_lookup_connection(p, socket, adopted, R8 if direct and target.kernel_walk else None)
    p.ja(mark)
    p.label(adopted)
    emit_lookup_adopted(p, R8, target.kernel_types.field("sock_common.skc_cookie.counter"), cookie, scratch,
                        direct, done)
    p.label(mark)
    p.mov(R1, 1)
    p.atomic_add(W, R0, ENTRY.offset("drops"), R1)
    p.ldx(W, R1, R10, key.at("reason"))
    p.stx(W, R0, ENTRY.offset("drop_reason"), R1)


def _not_drops(types: KernelTypes) -> tuple[int, ...]:
    names = _enum(types) or {}
    return tuple(value for value, name in names.items() if name in NOT_DROPS)


def _emit_namespace_check(p: Program, types: KernelTypes, netns: int, direct: bool, scratch: Slot,
                          skip: str) -> None:
    """A jump to `skip` unless the packet (skb in R7, its socket or 0 in R8) is in namespace `netns`: its
    device's, or without one its socket's; a packet with neither is nobody's. Clobbers R0-R5, R9."""
    by_socket, check = p.new_label("netns.socket"), p.new_label("netns.check")
    emit_read_field(p, R9, R7, types.field("sk_buff.dev"), scratch, direct)
    p.jeq(R9, 0, by_socket)
    emit_namespace(p, R9, R9, "net_device.nd_net.net", types, None, direct, scratch, skip)
    p.ja(check)
    p.label(by_socket)
    p.jeq(R8, 0, skip)
    emit_namespace(p, R9, R8, "sock_common.skc_net.net", types, None, direct, scratch, skip)
    p.label(check)
    p.jne32(R9, netns, skip)  # inode numbers are u32 and may exceed s32


def _emit_protocol(p: Program, types: KernelTypes, direct: bool, scratch: Slot, header: Slot) -> None:
    """R9 = the packet's protocol index: from its IP header where skb->protocol says it has one, else its
    socket's (R8, 0 if none). skb in R7. Clobbers R0-R5."""
    by_socket, known, not_tcp, done = (p.new_label(name) for name in (
        "proto.socket", "proto.known", "proto.not_tcp", "proto.done"))
    emit_ip_protocol(p, R9, R7, types, scratch, header, by_socket, direct)
    p.mov(R1, R9)
    p.ja(known)

    p.label(by_socket)
    p.mov(R9, OTHER_INDEX)
    p.jeq(R8, 0, done)
    emit_read_field(p, R1, R8, types.field("sock.sk_protocol"), scratch, direct)

    p.label(known)
    p.mov(R9, OTHER_INDEX)
    p.jne(R1, IPPROTO_TCP, not_tcp)
    p.mov(R9, TCP_INDEX)
    p.label(not_tcp)
    p.jne(R1, IPPROTO_UDP, done)
    p.mov(R9, UDP_INDEX)
    p.label(done)


def _emit_count(p: Program, key: Slot, one: Slot) -> None:
    """counts[key] += 1 on this CPU; a key the map has no room for counts in the overflow counter."""
    counted, full, overflow = p.new_label("counted"), p.new_label("full"), p.new_label("overflow")
    emit_map_lookup(p, COUNTS, key)
    p.jeq(R0, 0, full)
    p.ldx(DW, R1, R0, 0)
    p.add(R1, 1)
    p.stx(DW, R0, 0, R1)  # this CPU's own value: nothing else writes it meanwhile
    p.ja(counted)
    p.label(full)  # new: made with this CPU's 1 (the others' 0), unless the map is full
    p.st(DW, R10, one.at(), 1)
    emit_map_update(p, COUNTS, key, one, UpdateFlags.NOEXIST)
    p.jeq32(R0, 0, counted)
    emit_map_lookup(p, COUNTS, key)  # made meanwhile by another CPU: count in ours
    p.jeq(R0, 0, overflow)
    p.ldx(DW, R1, R0, 0)
    p.add(R1, 1)
    p.stx(DW, R0, 0, R1)
    p.ja(counted)
    p.label(overflow)
    p.st(W, R10, key.at("protocol"), 0)
    emit_increment(p, OVERFLOW, key)
    p.label(counted)


def counts_map(capacity: int = CAPACITY) -> PerCpuHashMap:
    return PerCpuHashMap(RecordCodec(KEY), U64, capacity, name="gsp_drop_counts")


def overflow_map() -> PerCpuArrayMap:
    return PerCpuArrayMap(U64, 1, name="gsp_drop_over")


class DropCounts(Reader):
    """The drop counts by protocol and reason."""

    def __init__(self, counts, overflow, reason: DropReasons):
        self._counts, self._overflow, self.reason = counts, overflow, reason

    @classmethod
    def from_context(cls, context: ReadContext) -> "DropCounts":
        return cls(context.maps[COUNTS], context.maps[OVERFLOW], DropReasons.of(context.attached.target.kernel_types))

    def series(self) -> Series:
        dropped: dict = {}
        for key, per_cpu in self._counts.items():
            protocol = PROTOCOLS[key.protocol] if key.protocol < len(PROTOCOLS) else OTHER
            series = labels(protocol=protocol, reason=self.reason(key.reason))
            dropped[series] = dropped.get(series, 0) + sum(per_cpu)
        overflow = sum(self._overflow[0])
        if overflow:
            dropped[labels(protocol=OTHER, reason=OTHER)] = overflow
        return {PACKETS_DROPPED.name: dropped}


def _check(context: CheckContext) -> str:
    """Whether drops are counted by the kernel's reason here, and why not."""
    from ...btf import BTFError, kernel_types

    try:
        types = kernel_types(context.settings.btf_source)
    except BTFError:
        types = None
    return reasons_available(types)


def _for_records(target: BuildTarget) -> bool:
    return target.records is not None


PROBE = Probe(
    name="packet_drops",
    summary="packets the kernel dropped, by protocol and the kernel's drop reason (named from BTF)",
    flavours=FLAVOURS,
    body=body,
    maps={COUNTS: counts_map, OVERFLOW: overflow_map},
    # Drops are counted on their connection's entry only for records.
    shared_maps={MAP_NAME: connections_map, ENTRIES: entries_map, ADOPTED: adopted_map},
    optional_maps={MAP_NAME: _for_records, ADOPTED: _for_records,
                   ENTRIES: lambda target: _for_records(target) and CONNECTION_MAPS_WANTED[ENTRIES](target)},
    protocol=None,
    metrics=(PACKETS_DROPPED,),
    reader=DropCounts.from_context,
    checks=(CheckLine("drop_reasons", "drop reasons", _check, when_left_out="not counted"),),
)
