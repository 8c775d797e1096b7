"""UDP flows, aggregated in the kernel: one map entry per (local, remote) address and port pair.

Why the device layer. UDP has no state changes to follow, and a datagram's
peer is known for sure only where the packet is: an unconnected socket carries
its peer in each message, not in the socket, and sock:sock_send_length /
sock_recv_length (6.x only, absent on 5.10) carry no address at all. Every
kernel from 5.10 on has these two tracepoints, with the packet and its headers:
  net:net_dev_queue      (udp_send)     a packet handed to a device to transmit;
                         skb->sk is the sending socket for locally made UDP,
                         headers at skb->head + skb->network_header
  net:netif_receive_skb  (udp_receive)  a packet a device received, before the
                         IP layer; skb->data is at the network header
This host has no kprobes and no fentry; both tracepoints also work as raw
tracepoints and tp_btf. (Functions such as udp_sendmsg see the socket but not,
for a connected socket, the headers; ip_rcv is not a tracepoint.)

What seeing datagrams at the device implies:
- Sent: only packets with an owning socket count (skb->sk), so forwarded
  packets are not "sent". A datagram waiting for neighbour resolution is
  counted when it leaves. One GSO packet (UDP_SEGMENT) counts as the datagrams
  it will be cut into (gso_segs); a fragmented datagram counts once, at its
  first fragment, whose UDP header has the whole length.
- Received: counted as the device delivers them, before the IP layer, so
  they include datagrams that no socket then takes (a closed port, a full
  receive buffer, a firewall drop) and, in a namespace that routes or bridges,
  packets only passing through (counted as received by their destination);
  a frame re-injected by a bridge or a tunnel device is seen on each device.
  Packets for another host (PACKET_OTHERHOST, e.g. in promiscuous mode) are
  skipped: the IP layer drops them. A GRO packet counts as its segments.
- Only UDP directly over IPv4 or IPv6 (an IPv6 fragment header is
  understood; other extension headers and in-band VLAN tags are not).
A v4-mapped IPv6 socket talking IPv4 sends and receives IPv4 packets, so its
flows are IPv4 flows.

The entry. Key: address family, local and remote address and port, and the
network namespace (two namespaces can each have a flow 127.0.0.1:53 <->
127.0.0.1:40000). Value: first and last seen (ktime), bytes and datagrams each
way, the role (client when first seen sending, server when first seen
receiving), and who sent: pid/tgid, comm and cgroup id of the task that sent
one of its datagrams first, read at a send by a task that is not a kernel
thread, and not in an interrupt as far as cpu_context can tell. UDP transmits
within sendmsg(), so that is the sender; but a first datagram that waited for
neighbour resolution leaves from a softirq, and if that softirq interrupted a
task in user mode, that task is named (a later datagram does not correct it).
A socket that sends to its own address and port (a datagram to itself) has
one flow: both directions have the same key, so its received datagrams count
in its client flow, and no server flow is made.
The totals. Datagrams and payload bytes each way, and flows made by role,
are also added to one per-CPU row (`udp_totals`) as each datagram is seen, so
the totals are exact whatever happens to the flow entries: the flow map bounds
only what is kept per flow, never what is counted. A flow the LRU map refuses
(no entry reclaimable at that instant, or its bucket lock refused) is counted
as made and as refused (`Totals.INSERTS_FAILED`); -EEXIST (another CPU made the
same flow first) is not a failure. A datagram's flow is counted before the
datagram, so a reader that sees a datagram sees the flow it made.

The kernel only adds; user space (probes/udp_metrics.py) reads the map when asked, ends flows idle past the flow
timeout by deleting them, and keeps their totals. The map is LRU, its capacity
the config's `limits.udp_flows`: when full, the least recently used flow is
evicted. User space counts an evicted flow as ended, and counts the eviction,
since that flow's own figures (and its args) are lost with it.
"""

from __future__ import annotations

import errno
import socket
from typing import Callable

from asm import (
    DW,
    R0,
    R1,
    R2,
    R3,
    R8,
    R9,
    R10,
    B,
    Frame,
    H,
    Program,
    Record,
    Register,
    Slot,
    W,
    array,
    u8,
    u16,
    u32,
    u64,
)

from ...bpf.maps import LruHashMap, PerCpuArrayMap, StructCodec
from ...bpf.syscall import UpdateFlags
from ...btf import KernelTypes
from ...vocabulary import CLIENT, DIRECTIONS, SERVER
from ..toolkit.arguments import Arguments
from ..toolkit.cpu_context import emit_skip_in_interrupt
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.map_calls import emit_map_lookup, emit_map_update
from ..toolkit.probe import BuildTarget
from ..toolkit.record_codec import RecordCodec
from ..toolkit.stack import emit_zero

#: Most flows followed at once by default (config limits.udp_flows); beyond that the least
#: recently used one is evicted.
CAPACITY = 16384
MAP_NAME = "udp_flows"
TOTALS = "udp_totals"

SENT, RECEIVED = DIRECTIONS
DIRECTION_INDEX = {name: index for index, name in enumerate(DIRECTIONS)}


class Totals:
    """Slots of the per-CPU totals row: the one contract between the probes and the collector."""

    DATAGRAMS = 0  # + direction index
    BYTES = DATAGRAMS + len(DIRECTION_INDEX)  # + direction index
    FLOWS_MADE = BYTES + len(DIRECTION_INDEX)  # + role
    INSERTS_FAILED = FLOWS_MADE + 2  # + role: flows made that the map refused (also in FLOWS_MADE)
    SLOTS = INSERTS_FAILED + 2


TOTALS_ROW = StructCodec(f"={Totals.SLOTS}Q")

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
IPPROTO_UDP, NEXTHDR_FRAGMENT = 17, 44
PACKET_OTHERHOST = 3
PF_KTHREAD = 0x00200000
IPV4_HEADER, IPV6_HEADER, UDP_HEADER, FRAGMENT_HEADER = 20, 40, 8, 8

KEY = Record("udp_flow_key", [
    ("local_address", array(u8, 16)),  # IPv4 in the first 4 bytes, the rest zero
    ("remote_address", array(u8, 16)),
    ("netns", u32),  # inode number of the network namespace
    ("local_port", u16),  # network order, as on the wire
    ("remote_port", u16),
    ("family", u16),  # AF_INET or AF_INET6
    ("pad", u16),
])

FLOW = Record("udp_flow", [
    ("first_ns", u64),  # ktime of the first datagram
    ("last_ns", u64),  # ktime of the latest datagram
    ("bytes_sent", u64),  # payload bytes
    ("bytes_received", u64),
    ("datagrams_sent", u64),
    ("datagrams_received", u64),
    ("cgroup_id", u64),  # of the task that sent first; 0 until a send in process context
    ("pid_tgid", u64),  # tgid << 32 | pid of that task; 0 until then
    ("comm", array(u8, 16)),
    ("role", u32),  # CLIENT or SERVER
    ("pad", u32),
])


KEY_CODEC, FLOW_CODEC = RecordCodec(KEY), RecordCodec(FLOW)


#: Emits `register = inode of the packet's network namespace`, or a jump to the program's exit; clobbers R0-R5.
NamespaceCode = Callable[[Program, Register], None]


def flows_map(capacity: int = CAPACITY) -> LruHashMap:
    return LruHashMap(KEY_CODEC, FLOW_CODEC, capacity, name="gsp_udp_flows")


def totals_map() -> PerCpuArrayMap:
    return PerCpuArrayMap(TOTALS_ROW, 1, name="gsp_udp_totals")


# The headers as the probes read them from the packet (network order).
_IPV4 = Record("iphdr", [("version_ihl", u8), ("tos", u8), ("tot_len", u16), ("id", u16), ("frag_off", u16),
                         ("ttl", u8), ("protocol", u8), ("check", u16), ("saddr", array(u8, 4)),
                         ("daddr", array(u8, 4))])
_IPV6 = Record("ipv6hdr", [("version_flow", u32), ("payload_len", u16), ("nexthdr", u8), ("hop_limit", u8),
                           ("saddr", array(u8, 16)), ("daddr", array(u8, 16))])
_FRAGMENT = Record("frag_hdr", [("nexthdr", u8), ("reserved", u8), ("frag_off", u16), ("identification", u32)])
_UDP = Record("udphdr", [("source", u16), ("dest", u16), ("len", u16), ("check", u16)])
_ADDRESSES = {"src": "saddr", "dst": "daddr"}
_PORTS = {"src": "source", "dst": "dest"}


class FlowSlots:
    """The stack slots of both probes' programs, made first by each body (after the event's own)."""

    def __init__(self, frame: Frame) -> None:
        self.scratch = frame.alloc("read scratch", size=8)
        self.payload = frame.alloc("payload", size=8)
        self.datagrams = frame.alloc("datagrams", size=8)
        self.ip = frame.alloc("IP header address", size=8)  # kernel addresses of the headers
        self.udp_at = frame.alloc("UDP header address", size=8)
        self.key = frame.alloc("flow key", KEY)
        # The IP header (40 bytes for IPv6) and, after it, an IPv6 fragment header.
        self.headers = frame.alloc("IP headers", size=IPV6_HEADER + FRAGMENT_HEADER)
        self.udp = frame.alloc("UDP header", _UDP)
        self.flow = frame.alloc("new flow", FLOW)
        self.context = frame.alloc("context", size=8)  # udp_send's context pointer, for the task-context check
        self.row_key = frame.alloc("totals key", size=8)


def emit_ntohs(p: Program, register) -> None:
    """Network to host order for a 16-bit value just loaded (a swap on little-endian, a no-op on big)."""
    p.to_be(register, 16)


def emit_flow_update(p: Program, args: Arguments, s: FlowSlots, skb: Register, ip_header: Register,
                     namespace: NamespaceCode, target: BuildTarget, direction: str, skip: str) -> None:
    """Emit the shared part of both probes: parse the packet at `ip_header`, count it in its flow.

    The event's context was saved in `s.context` with `emit_save_context` (udp_send). `skb` is a
    callee-saved register holding the sk_buff; `ip_header` one with the kernel address of its network
    header. The protocol (skb->protocol) has been checked to be IPv4 or IPv6 and is in R9 (host order).
    `namespace` emits the namespace's inode into a register (or a jump to `skip`); it runs only for UDP,
    so other packets cost no more reads. Jumps to `skip` for anything that is not a whole or
    first-fragment UDP datagram. Clobbers R0-R5, R8, R9.
    """
    local, remote = ("src", "dst") if direction == SENT else ("dst", "src")
    emit_zero(p, s.key)
    p.stx(DW, R10, s.ip.at(), ip_header)
    udp = p.new_label("udp")
    _emit_ip_header(p, s, local, remote, udp, skip)
    p.label(udp)
    _emit_udp_header(p, s, local, remote, skip)
    namespace(p, R9)
    p.stx(W, R10, s.key.at("netns"), R9)
    _emit_datagrams(p, s, skb, target.kernel_types, args.btf_pointers)
    _emit_totals_row(p, s, skip)
    _emit_find_or_make_flow(p, s, direction)
    _emit_totals(p, s, direction)
    p.jeq(R8, 0, skip)  # no entry to add to: the totals have it all
    p.call("ktime_get_ns")
    p.stx(DW, R8, FLOW.offset("last_ns"), R0)
    p.ldx(DW, R1, R10, s.payload.at())
    p.atomic_add(DW, R8, FLOW.offset(f"bytes_{direction}"), R1)
    p.ldx(DW, R1, R10, s.datagrams.at())
    p.atomic_add(DW, R8, FLOW.offset(f"datagrams_{direction}"), R1)
    if direction == SENT:
        _emit_note_sender(p, args, target, s, skip)


def _emit_ip_header(p: Program, s: FlowSlots, local: str, remote: str, udp: str, skip: str) -> None:
    """The key's addresses and family from the IPv4 or IPv6 header, and s.udp_at; then a jump to `udp`."""
    ipv6 = p.new_label("ipv6")
    p.jeq(R9, ETH_P_IPV6, ipv6)
    # IPv4: version/IHL, protocol, fragment offset, addresses.
    _emit_read(p, s.headers, IPV4_HEADER, s.ip, skip)
    p.ldx(B, R1, R10, s.headers.at(_IPV4.offset("protocol")))
    p.jne(R1, IPPROTO_UDP, skip)
    p.ldx(H, R1, R10, s.headers.at(_IPV4.offset("frag_off")))
    emit_ntohs(p, R1)
    p.and_(R1, 0x1FFF)
    p.jne(R1, 0, skip)  # a later fragment: no UDP header
    p.ldx(B, R1, R10, s.headers.at(_IPV4.offset("version_ihl")))
    p.and_(R1, 0x0F)
    p.lsh(R1, 2)
    p.jlt(R1, IPV4_HEADER, skip)
    p.ldx(DW, R2, R10, s.ip.at())
    p.add(R2, R1)
    p.stx(DW, R10, s.udp_at.at(), R2)
    p.ldx(W, R1, R10, s.headers.at(_IPV4.offset(_ADDRESSES[local])))
    p.stx(W, R10, s.key.at("local_address"), R1)
    p.ldx(W, R1, R10, s.headers.at(_IPV4.offset(_ADDRESSES[remote])))
    p.stx(W, R10, s.key.at("remote_address"), R1)
    p.st(H, R10, s.key.at("family"), socket.AF_INET)
    p.ja(udp)

    p.label(ipv6)
    _emit_ipv6_header(p, s, local, remote, udp, skip)


def _emit_ipv6_header(p: Program, s: FlowSlots, local: str, remote: str, udp: str, skip: str) -> None:
    """IPv6: the fixed header, then UDP (a jump to `udp`) or a fragment header followed by UDP."""
    _emit_read(p, s.headers, IPV6_HEADER, s.ip, skip)
    for part in range(0, 16, 8):
        p.ldx(DW, R1, R10, s.headers.at(_IPV6.offset(_ADDRESSES[local]) + part))
        p.stx(DW, R10, s.key.at("local_address", part), R1)
        p.ldx(DW, R1, R10, s.headers.at(_IPV6.offset(_ADDRESSES[remote]) + part))
        p.stx(DW, R10, s.key.at("remote_address", part), R1)
    p.st(H, R10, s.key.at("family"), socket.AF_INET6)
    p.ldx(DW, R2, R10, s.ip.at())
    p.add(R2, IPV6_HEADER)
    p.stx(DW, R10, s.udp_at.at(), R2)
    p.ldx(B, R1, R10, s.headers.at(_IPV6.offset("nexthdr")))
    p.jeq(R1, IPPROTO_UDP, udp)
    p.jne(R1, NEXTHDR_FRAGMENT, skip)
    _emit_read(p, s.headers, FRAGMENT_HEADER, s.udp_at, skip)
    p.ldx(H, R1, R10, s.headers.at(_FRAGMENT.offset("frag_off")))
    emit_ntohs(p, R1)
    p.and_(R1, 0xFFF8)
    p.jne(R1, 0, skip)  # a later fragment
    p.ldx(B, R1, R10, s.headers.at(_FRAGMENT.offset("nexthdr")))
    p.jne(R1, IPPROTO_UDP, skip)
    p.ldx(DW, R2, R10, s.udp_at.at())
    p.add(R2, FRAGMENT_HEADER)
    p.stx(DW, R10, s.udp_at.at(), R2)


def _emit_udp_header(p: Program, s: FlowSlots, local: str, remote: str, skip: str) -> None:
    """UDP: the key's ports, and s.payload: the length less the header."""
    _emit_read(p, s.udp, UDP_HEADER, s.udp_at, skip)
    p.ldx(H, R1, R10, s.udp.at(_PORTS[local]))
    p.stx(H, R10, s.key.at("local_port"), R1)
    p.ldx(H, R1, R10, s.udp.at(_PORTS[remote]))
    p.stx(H, R10, s.key.at("remote_port"), R1)
    p.ldx(H, R1, R10, s.udp.at("len"))
    emit_ntohs(p, R1)
    p.jlt(R1, UDP_HEADER, skip)
    p.sub(R1, UDP_HEADER)
    p.stx(DW, R10, s.payload.at(), R1)


def _emit_datagrams(p: Program, s: FlowSlots, skb: Register, types: KernelTypes, direct: bool) -> None:
    """s.datagrams: one, or the segments of a GSO (sent) or GRO (received) packet. `direct`: for skb's
    own fields; skb_shinfo is a plain address."""
    counted = p.new_label("counted")
    p.st(DW, R10, s.datagrams.at(), 1)
    emit_read_field(p, R8, skb, types.field("sk_buff.head"), s.scratch, direct)
    emit_read_field(p, R1, skb, types.field("sk_buff.end"), s.scratch, direct)
    p.add(R8, R1)  # skb_shinfo(skb): the end offset from head (64-bit kernels)
    emit_read_field(p, R9, R8, types.field("skb_shared_info.gso_size"), s.scratch)
    p.jeq(R9, 0, counted)
    emit_read_field(p, R9, R8, types.field("skb_shared_info.gso_segs"), s.scratch)
    p.jle(R9, 1, counted)
    p.stx(DW, R10, s.datagrams.at(), R9)
    p.label(counted)


def _emit_totals_row(p: Program, s: FlowSlots, skip: str) -> None:
    """R9 = this CPU's totals row, looked up before the flow: a flow made is counted in it."""
    p.st(DW, R10, s.row_key.at(), 0)
    emit_map_lookup(p, TOTALS, s.row_key)
    p.jeq(R0, 0, skip)
    p.mov(R9, R0)


def _emit_totals(p: Program, s: FlowSlots, direction: str) -> None:
    """The datagrams and bytes into the row at R9, whether or not the flow has an entry, and after the
    flow was counted: the row is copied out in slot order, datagrams before flows, so a reader that
    sees a datagram also sees the flow it made (on x86, whose stores are seen in program order)."""
    p.ldx(DW, R1, R10, s.datagrams.at())
    p.atomic_add(DW, R9, 8 * (Totals.DATAGRAMS + DIRECTION_INDEX[direction]), R1)
    p.ldx(DW, R1, R10, s.payload.at())
    p.atomic_add(DW, R9, 8 * (Totals.BYTES + DIRECTION_INDEX[direction]), R1)


def _emit_read(p: Program, dst: Slot, size: int, address: Slot, skip: str) -> None:
    """Copy `size` bytes of kernel memory at the address kept in slot `address` to slot `dst`; a jump to
    `skip` if the read faults."""
    p.mov(R1, R10)
    p.add(R1, dst.at())
    p.mov(R2, size)
    p.ldx(DW, R3, R10, address.at())
    p.call("probe_read_kernel")
    p.jne(R0, 0, skip)


def _emit_find_or_make_flow(p: Program, s: FlowSlots, direction: str) -> None:
    """R8 = the flow's entry, made first (counts zero, role by direction) if there is none; 0 if it has none.

    A flow made here is counted in the totals row at R9, by its role, whether the map takes it or not.
    The insert (BPF_NOEXIST) fails with -EEXIST when another CPU made the same flow first: that CPU
    counted it, and its entry is looked up (0 if evicted already). Any other failure is the LRU map's:
    no entry could be reclaimed (-ENOMEM: the LRU hands entries to each CPU in batches, and an entry
    another CPU took but has not filled in yet cannot be taken back), or the bucket's lock was refused
    (-EBUSY on a CPU already inside the map, before 6.15; -EDEADLK or -ETIMEDOUT from 6.15). That
    flow is counted as made and as refused; user space, finding it neither open nor ended, counts it
    as evicted. The flow's next datagram tries again, and counts a new flow if it gets in.
    """
    role = CLIENT if direction == SENT else SERVER
    new_flow, look_up, done = p.new_label("new_flow"), p.new_label("look_up"), p.new_label("flow_done")
    emit_map_lookup(p, MAP_NAME, s.key)
    p.mov(R8, R0)
    p.jeq(R8, 0, new_flow)
    p.ja(done)
    p.label(new_flow)
    emit_zero(p, s.flow)
    p.call("ktime_get_ns")
    p.stx(DW, R10, s.flow.at("first_ns"), R0)
    p.stx(DW, R10, s.flow.at("last_ns"), R0)  # a walk may see the flow before its datagram: young, not expired
    p.st(W, R10, s.flow.at("role"), role)
    emit_map_update(p, MAP_NAME, s.key, s.flow, UpdateFlags.NOEXIST)
    p.jeq32(R0, -errno.EEXIST, look_up)
    p.mov(R1, 1)
    p.atomic_add(DW, R9, 8 * (Totals.FLOWS_MADE + role), R1)
    p.jeq32(R0, 0, look_up)
    p.atomic_add(DW, R9, 8 * (Totals.INSERTS_FAILED + role), R1)
    p.mov(R8, 0)
    p.ja(done)
    p.label(look_up)
    emit_map_lookup(p, MAP_NAME, s.key)  # ours, or the other CPU's; 0 if evicted already
    p.mov(R8, R0)
    p.label(done)


def _emit_note_sender(p: Program, args: Arguments, target: BuildTarget, s: FlowSlots, skip: str) -> None:
    """Fill in pid/tgid, comm and cgroup id once, from a send in the context of a task (not in an
    interrupt, where `current` is any task) that is not a kernel thread."""
    p.ldx(DW, R1, R8, FLOW.offset("pid_tgid"))
    p.jne(R1, 0, skip)
    emit_skip_in_interrupt(p, args, target, skip, s.context, s.payload)  # the payload is counted by now
    p.call("get_current_task")
    p.mov(R9, R0)
    emit_read_field(p, R1, R9, target.kernel_types.field("task_struct.flags"), s.scratch)
    p.jset(R1, PF_KTHREAD, skip)
    p.call("get_current_pid_tgid")
    p.jeq(R0, 0, skip)  # the idle task
    p.stx(DW, R8, FLOW.offset("pid_tgid"), R0)
    p.mov(R1, R8)
    p.add(R1, FLOW.offset("comm"))
    p.mov(R2, 16)
    p.call("get_current_comm")
    p.call("get_current_cgroup_id")
    p.stx(DW, R8, FLOW.offset("cgroup_id"), R0)


def emit_protocol(p: Program, skb, types: KernelTypes, direct: bool, scratch: Slot, skip: str) -> None:
    """R9 = skb->protocol in host order; jumps to `skip` unless it is IPv4 or IPv6. `direct`: `skb` is
    BTF-typed (see emit_read_field). Clobbers R0-R5."""
    ip = p.new_label("ip")
    emit_read_field(p, R9, skb, types.field("sk_buff.protocol"), scratch, direct)
    emit_ntohs(p, R9)
    p.jeq(R9, ETH_P_IP, ip)
    p.jne(R9, ETH_P_IPV6, skip)
    p.label(ip)


def emit_namespace(p: Program, dst: Register, holder: Register, field: str, types: KernelTypes,
                   netns: int | None, direct: bool, scratch: Slot, skip: str) -> None:
    """dst = the inode of the namespace `holder->field` (a `struct net *`) points to; a jump to
    `skip` if `netns` (an inode) is given and differs. `holder` may be `dst`; `direct`: it is
    BTF-typed (see emit_read_field). Clobbers R0-R5."""
    emit_read_field(p, dst, holder, types.field(field), scratch, direct)
    emit_read_field(p, dst, dst, types.field("net.ns.inum"), scratch, direct)
    if netns is not None:
        p.jne32(dst, netns, skip)  # inode numbers are u32 and may exceed s32


def emit_exit(p: Program, out: str) -> None:
    """The programs' one exit, at `out`: return 0."""
    p.label(out)
    p.mov(R0, 0)
    p.exit()
