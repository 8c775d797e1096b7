"""Reading a packet from a probe: its namespace, its IP protocol, its transport header.

A packet (struct sk_buff) keeps its headers in the buffer at `head`, each at an
offset: `network_header` for the IP header, `transport_header` for the TCP or
UDP header once the IP layer has set it (every received packet past IP). The
header bytes are read with bpf_probe_read_kernel whatever the flavour: a
`head` loaded through a BTF pointer is a plain number to the verifier.
"""

from __future__ import annotations

from asm import DW, R0, R1, R2, R3, R10, B, Program, Register, Slot

from ...btf import KernelTypes
from .kernel_memory import emit_read_field

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
#: Where the next protocol's number is in each IP header.
IPV4_PROTOCOL, IPV6_NEXT_HEADER = 9, 6
IPPROTO_TCP, IPPROTO_UDP = 6, 17


def emit_packet_netns_check(p: Program, skb: Register, types: KernelTypes, netns: int, skip: str, scratch: Slot,
                            direct: bool = False) -> None:
    """A jump to `skip` unless the packet at `skb` is on a device in namespace `netns` (a packet with no
    device is nobody's). Clobbers R0-R5."""
    emit_read_field(p, R2, skb, types.field("sk_buff.dev"), scratch, direct)
    p.jeq(R2, 0, skip)
    emit_read_field(p, R2, R2, types.field("net_device.nd_net.net"), scratch, direct)
    emit_read_field(p, R2, R2, types.field("net.ns.inum"), scratch, direct)
    p.jne32(R2, netns, skip)  # inode numbers are u32 and may exceed s32


def emit_ip_protocol(p: Program, dst: Register, skb: Register, types: KernelTypes, scratch: Slot, byte: Slot,
                     unknown: str, direct: bool = False) -> None:
    """dst = the IP protocol of the packet at `skb` (IPv4's protocol, IPv6's next header: 6 TCP, 17 UDP); a
    jump to `unknown` for a packet that is not IP, or whose header cannot be read. `dst` is one of R6-R9,
    which the reads in between leave alone; `byte` is a free 8-byte slot. Clobbers R0-R5."""
    ipv4, read = p.new_label("ip_protocol.ipv4"), p.new_label("ip_protocol.read")
    emit_read_field(p, dst, skb, types.field("sk_buff.protocol"), scratch, direct)
    p.to_be(dst, 16)
    p.jeq(dst, ETH_P_IP, ipv4)
    p.jne(dst, ETH_P_IPV6, unknown)
    p.mov(dst, IPV6_NEXT_HEADER)
    p.ja(read)
    p.label(ipv4)
    p.mov(dst, IPV4_PROTOCOL)
    p.label(read)  # the byte is at head + network_header + its place in the header
    emit_read_field(p, R1, skb, types.field("sk_buff.network_header"), scratch, direct)
    p.add(dst, R1)
    emit_read_field(p, R1, skb, types.field("sk_buff.head"), scratch, direct)
    p.add(dst, R1)
    p.st(DW, R10, byte.at(), 0)
    p.mov(R3, dst)
    p.mov(R1, R10)
    p.add(R1, byte.at())
    p.mov(R2, 1)
    p.call("probe_read_kernel")
    p.jne(R0, 0, unknown)
    p.ldx(B, dst, R10, byte.at())


def emit_read_transport_header(p: Program, skb: Register, types: KernelTypes, scratch: Slot, header: Slot,
                               size: int, direct: bool = False) -> None:
    """Copy the first `size` bytes (at least 8: the slot holds an address meanwhile) of the packet's transport
    header (TCP, UDP) into stack slot `header`: the ports are its first four bytes. A packet whose header
    cannot be read leaves zeros. Needs sk_buff.transport_header. Clobbers R0-R5."""
    emit_read_field(p, R1, skb, types.field("sk_buff.head"), scratch, direct)
    p.stx(DW, R10, header.at(), R1)
    emit_read_field(p, R3, skb, types.field("sk_buff.transport_header"), scratch, direct)
    p.ldx(DW, R1, R10, header.at())
    p.add(R3, R1)
    p.mov(R1, R10)
    p.add(R1, header.at())
    p.mov(R2, size)
    p.call("probe_read_kernel")


__all__ = ["IPPROTO_TCP", "IPPROTO_UDP", "emit_ip_protocol", "emit_packet_netns_check", "emit_read_transport_header"]
