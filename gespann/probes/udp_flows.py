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
The totals. Datagrams and payload bytes each way, and flows made by role,
are also added to one per-CPU row (`udp_totals`) as each datagram is seen, so
the totals are exact whatever happens to the flow entries: the flow map bounds
only what is kept per flow, never what is counted.

The kernel only adds; user space (collector/udp.py) reads the map when asked, ends flows idle past the flow
timeout by deleting them, and keeps their totals. The map is LRU, its capacity
the config's `limits.udp_flows`: when full, the least recently used flow is
evicted. User space counts an evicted flow as ended, and counts the eviction,
since that flow's own figures (and its event) are lost with it.
"""

from __future__ import annotations

import socket
from typing import Callable

from asm import DW, R0, R1, R2, R3, R8, R9, R10, B, H, Program, Record, Register, W, array, u8, u16, u32, u64

from ..bpf.maps import LruHashMap, PerCpuArrayMap, StructCodec
from ..bpf.syscall import UpdateFlags
from ..btf import KernelTypes
from ..vocabulary import CLIENT, DIRECTIONS, SERVER
from .cpu_context import emit_skip_in_interrupt
from .events import Event
from .kernel_memory import emit_read_field
from .map_calls import emit_map_lookup, emit_map_update
from .probe import BuildTarget
from .record_codec import RecordCodec
from .stack import emit_zero

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
    SLOTS = FLOWS_MADE + 2


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


#: Emits `register = inode of the packet's network namespace`, or a jump to "out"; clobbers R0-R5.
NamespaceCode = Callable[[Program, Register], None]


def flows_map(capacity: int = CAPACITY) -> LruHashMap:
    return LruHashMap(KEY_CODEC, FLOW_CODEC, capacity, name="gsp_udp_flows")


def totals_map() -> PerCpuArrayMap:
    return PerCpuArrayMap(TOTALS_ROW, 1, name="gsp_udp_totals")


# Stack slots of both probes' programs; -8 is the events' scratch slot.
_READ_SCRATCH = -16
_PAYLOAD = -24
_DATAGRAMS = -32
_IP = -40  # kernel address of the IP header
_UDP_AT = -48  # kernel address of the UDP header
_KEY = -48 - 48  # KEY.size (44) rounded up to 8
_HEADER = _KEY - 48  # the IP header (40 bytes for IPv6) and, after it, an IPv6 fragment header
_UDP = _HEADER - 8
_FLOW = _UDP - FLOW.size
#: Where udp_send keeps its context pointer for the task-context check.
CONTEXT_SLOT = _FLOW - 8
_ROW_KEY = CONTEXT_SLOT - 8


def _key(field: str) -> int:
    return _KEY + KEY.offset(field)


def _flow(field: str) -> int:
    return _FLOW + FLOW.offset(field)


def emit_ntohs(p: Program, register) -> None:
    """Network to host order for a 16-bit value just loaded (a swap on little-endian, a no-op on big)."""
    p.to_be(register, 16)


def emit_flow_update(p: Program, event: Event, skb: Register, ip_header: Register, namespace: NamespaceCode,
                     target: BuildTarget, direction: str) -> None:
    """Emit the shared part of both probes: parse the packet at `ip_header`, count it in its flow.

    The event's context was saved with `emit_save_context` (udp_send). `skb` is a callee-saved register holding the sk_buff; `ip_header` one with the kernel
    address of its network header. The protocol (skb->protocol) has been checked to be IPv4
    or IPv6 and is in R9 (host order). `namespace` emits the namespace's inode into a register
    (or a jump to "out"); it runs only for UDP, so other packets cost no more reads. Jumps to
    "out" for anything that is not a whole or first-fragment UDP datagram.
    Clobbers R0-R5, R8, R9.
    """
    types = target.kernel_types
    direct = event.btf_pointers  # for skb's own fields; the headers and skb_shinfo are plain addresses
    local, remote = ("src", "dst") if direction == SENT else ("dst", "src")
    for offset in range(0, 48, 8):
        p.st(DW, R10, _KEY + offset, 0)
    p.stx(DW, R10, _IP, ip_header)
    p.jeq(R9, ETH_P_IPV6, "ipv6")

    # IPv4: version/IHL, protocol, fragment offset, addresses.
    _emit_read(p, _HEADER, IPV4_HEADER, _IP)
    p.ldx(B, R1, R10, _HEADER + 9)
    p.jne(R1, IPPROTO_UDP, "out")
    p.ldx(H, R1, R10, _HEADER + 6)
    emit_ntohs(p, R1)
    p.and_(R1, 0x1FFF)
    p.jne(R1, 0, "out")  # a later fragment: no UDP header
    p.ldx(B, R1, R10, _HEADER)
    p.and_(R1, 0x0F)
    p.lsh(R1, 2)
    p.jlt(R1, IPV4_HEADER, "out")
    p.ldx(DW, R2, R10, _IP)
    p.add(R2, R1)
    p.stx(DW, R10, _UDP_AT, R2)
    addresses = {"src": 12, "dst": 16}
    p.ldx(W, R1, R10, _HEADER + addresses[local])
    p.stx(W, R10, _key("local_address"), R1)
    p.ldx(W, R1, R10, _HEADER + addresses[remote])
    p.stx(W, R10, _key("remote_address"), R1)
    p.st(H, R10, _key("family"), socket.AF_INET)
    p.ja("udp")

    # IPv6: the fixed header, then UDP or a fragment header followed by UDP.
    p.label("ipv6")
    _emit_read(p, _HEADER, IPV6_HEADER, _IP)
    addresses = {"src": 8, "dst": 24}
    for part in range(0, 16, 8):
        p.ldx(DW, R1, R10, _HEADER + addresses[local] + part)
        p.stx(DW, R10, _key("local_address") + part, R1)
        p.ldx(DW, R1, R10, _HEADER + addresses[remote] + part)
        p.stx(DW, R10, _key("remote_address") + part, R1)
    p.st(H, R10, _key("family"), socket.AF_INET6)
    p.ldx(DW, R2, R10, _IP)
    p.add(R2, IPV6_HEADER)
    p.stx(DW, R10, _UDP_AT, R2)
    p.ldx(B, R1, R10, _HEADER + 6)
    p.jeq(R1, IPPROTO_UDP, "udp")
    p.jne(R1, NEXTHDR_FRAGMENT, "out")
    _emit_read(p, _HEADER, FRAGMENT_HEADER, _UDP_AT)
    p.ldx(H, R1, R10, _HEADER + 2)
    emit_ntohs(p, R1)
    p.and_(R1, 0xFFF8)
    p.jne(R1, 0, "out")  # a later fragment
    p.ldx(B, R1, R10, _HEADER)
    p.jne(R1, IPPROTO_UDP, "out")
    p.ldx(DW, R2, R10, _UDP_AT)
    p.add(R2, FRAGMENT_HEADER)
    p.stx(DW, R10, _UDP_AT, R2)

    # UDP: ports and length; the payload is the length less the header.
    p.label("udp")
    _emit_read(p, _UDP, UDP_HEADER, _UDP_AT)
    ports = {"src": 0, "dst": 2}
    p.ldx(H, R1, R10, _UDP + ports[local])
    p.stx(H, R10, _key("local_port"), R1)
    p.ldx(H, R1, R10, _UDP + ports[remote])
    p.stx(H, R10, _key("remote_port"), R1)
    p.ldx(H, R1, R10, _UDP + 4)
    emit_ntohs(p, R1)
    p.jlt(R1, UDP_HEADER, "out")
    p.sub(R1, UDP_HEADER)
    p.stx(DW, R10, _PAYLOAD, R1)
    namespace(p, R9)
    p.stx(W, R10, _key("netns"), R9)

    # Datagrams: one, or the segments of a GSO (sent) or GRO (received) packet.
    p.st(DW, R10, _DATAGRAMS, 1)
    emit_read_field(p, R8, skb, types.field("sk_buff.head"), _READ_SCRATCH, direct)
    emit_read_field(p, R1, skb, types.field("sk_buff.end"), _READ_SCRATCH, direct)
    p.add(R8, R1)  # skb_shinfo(skb): the end offset from head (64-bit kernels)
    emit_read_field(p, R9, R8, types.field("skb_shared_info.gso_size"), _READ_SCRATCH)
    p.jeq(R9, 0, "counted")
    emit_read_field(p, R9, R8, types.field("skb_shared_info.gso_segs"), _READ_SCRATCH)
    p.jle(R9, 1, "counted")
    p.stx(DW, R10, _DATAGRAMS, R9)
    p.label("counted")

    # The totals first: they must not depend on the flow entry. R9 keeps the row.
    p.st(DW, R10, _ROW_KEY, 0)
    emit_map_lookup(p, TOTALS, _ROW_KEY)
    p.jeq(R0, 0, "out")
    p.mov(R9, R0)
    p.ldx(DW, R1, R10, _DATAGRAMS)
    p.atomic_add(DW, R9, 8 * (Totals.DATAGRAMS + DIRECTION_INDEX[direction]), R1)
    p.ldx(DW, R1, R10, _PAYLOAD)
    p.atomic_add(DW, R9, 8 * (Totals.BYTES + DIRECTION_INDEX[direction]), R1)

    _emit_find_or_make_flow(p, direction)
    p.call("ktime_get_ns")
    p.stx(DW, R8, FLOW.offset("last_ns"), R0)
    p.ldx(DW, R1, R10, _PAYLOAD)
    p.atomic_add(DW, R8, FLOW.offset(f"bytes_{direction}"), R1)
    p.ldx(DW, R1, R10, _DATAGRAMS)
    p.atomic_add(DW, R8, FLOW.offset(f"datagrams_{direction}"), R1)
    if direction == SENT:
        _emit_note_sender(p, event, target)


def _emit_read(p: Program, dst: int, size: int, address_slot: int) -> None:
    """Copy `size` bytes of kernel memory at the address kept in `address_slot` to the stack at `dst`."""
    p.mov(R1, R10)
    p.add(R1, dst)
    p.mov(R2, size)
    p.ldx(DW, R3, R10, address_slot)
    p.call("probe_read_kernel")
    p.jne(R0, 0, "out")


def _emit_lookup(p: Program, missing: str) -> None:
    emit_map_lookup(p, MAP_NAME, _KEY)
    p.jeq(R0, 0, missing)
    p.mov(R8, R0)


def _emit_find_or_make_flow(p: Program, direction: str) -> None:
    """R8 = the flow's entry, made first (counts zero, role by direction) if there is none; a flow
    made here is counted in the totals row at R9, by its role."""
    role = CLIENT if direction == SENT else SERVER
    _emit_lookup(p, "new_flow")
    p.ja("found")
    p.label("new_flow")
    emit_zero(p, FLOW, _FLOW)
    p.call("ktime_get_ns")
    p.stx(DW, R10, _flow("first_ns"), R0)
    p.st(W, R10, _flow("role"), role)
    emit_map_update(p, MAP_NAME, _KEY, _FLOW, UpdateFlags.NOEXIST)  # made first elsewhere? Either way, look it up
    p.jne(R0, 0, "made_elsewhere")
    p.mov(R1, 1)
    p.atomic_add(DW, R9, 8 * (Totals.FLOWS_MADE + role), R1)
    p.label("made_elsewhere")
    _emit_lookup(p, "out")
    p.label("found")


def _emit_note_sender(p: Program, event: Event, target: BuildTarget) -> None:
    """Fill in pid/tgid, comm and cgroup id once, from a send in the context of a task (not in an
    interrupt, where `current` is any task) that is not a kernel thread."""
    p.ldx(DW, R1, R8, FLOW.offset("pid_tgid"))
    p.jne(R1, 0, "out")
    emit_skip_in_interrupt(p, event, target, "out", CONTEXT_SLOT, _PAYLOAD)  # the payload is counted by now
    p.call("get_current_task")
    p.mov(R9, R0)
    emit_read_field(p, R1, R9, target.kernel_types.field("task_struct.flags"), _READ_SCRATCH)
    p.jset(R1, PF_KTHREAD, "out")
    p.call("get_current_pid_tgid")
    p.jeq(R0, 0, "out")  # the idle task
    p.stx(DW, R8, FLOW.offset("pid_tgid"), R0)
    p.mov(R1, R8)
    p.add(R1, FLOW.offset("comm"))
    p.mov(R2, 16)
    p.call("get_current_comm")
    p.call("get_current_cgroup_id")
    p.stx(DW, R8, FLOW.offset("cgroup_id"), R0)


def emit_protocol(p: Program, skb, types: KernelTypes, direct: bool) -> None:
    """R9 = skb->protocol in host order; jumps to "out" unless it is IPv4 or IPv6. `direct`: `skb` is
    BTF-typed (see emit_read_field). Clobbers R0-R5."""
    emit_read_field(p, R9, skb, types.field("sk_buff.protocol"), _READ_SCRATCH, direct)
    emit_ntohs(p, R9)
    p.jeq(R9, ETH_P_IP, "ip")
    p.jne(R9, ETH_P_IPV6, "out")
    p.label("ip")


def emit_namespace(p: Program, dst: Register, holder: Register, field: str, types: KernelTypes,
                   netns: int | None, direct: bool) -> None:
    """dst = the inode of the namespace `holder->field` (a `struct net *`) points to; a jump to
    "out" if `netns` (an inode) is given and differs. `holder` may be `dst`; `direct`: it is
    BTF-typed (see emit_read_field). Clobbers R0-R5."""
    emit_read_field(p, dst, holder, types.field(field), _READ_SCRATCH, direct)
    emit_read_field(p, dst, dst, types.field("net.ns.inum"), _READ_SCRATCH, direct)
    if netns is not None:
        p.jne32(dst, netns, "out")  # inode numbers are u32 and may exceed s32


def emit_exit(p: Program) -> None:
    p.label("out")
    p.mov(R0, 0)
    p.exit()

