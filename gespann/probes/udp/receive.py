"""UDP datagrams received: counted in their flow as a device delivers them (net:netif_receive_skb).

The tracepoint fires in __netif_receive_skb_core before the IP layer, with
skb->data at the network header; the namespace is the receiving device's.
The flow key is the sender's, turned round: local is the destination. See
udp_flows for the flow entry and what seeing packets at the device implies.
"""

from __future__ import annotations

from asm import R1, R7, R8, Program

from ..toolkit.arguments import Arguments
from ..toolkit.flavours import BtfTracepoint, RawTracepoint, Tracepoint
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.probe import BuildTarget, Probe
from .flows import (
    MAP_NAME,
    PACKET_OTHERHOST,
    RECEIVED,
    TOTALS,
    FlowSlots,
    emit_exit,
    emit_flow_update,
    emit_namespace,
    emit_protocol,
    flows_map,
    totals_map,
)

FLAVOURS = (
    BtfTracepoint("netif_receive_skb", args=("skb",)),
    RawTracepoint("netif_receive_skb", args=("skb",)),
    Tracepoint("net", "netif_receive_skb", fields={"skb": "skbaddr"}),
)


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    types = target.kernel_types
    direct = args.btf_pointers  # skb, and the device loaded from it, may be read with direct loads
    s, out = FlowSlots(p.frame), p.new_label("out")
    args.load(p, R7, "skb")
    emit_read_field(p, R1, R7, types.field("sk_buff.pkt_type"), s.scratch, direct)
    p.jeq(R1, PACKET_OTHERHOST, out)  # for another host: the IP layer drops it
    emit_protocol(p, R7, types, direct, s.scratch, out)
    # The IP header's protocol says whether it is UDP: a packet that is not pays that one read.
    emit_read_field(p, R8, R7, types.field("sk_buff.data"), s.scratch, direct)

    def namespace(p: Program, dst) -> None:
        emit_read_field(p, dst, R7, types.field("sk_buff.dev"), s.scratch, direct)
        emit_namespace(p, dst, dst, "net_device.nd_net.net", types, target.netns, direct, s.scratch, out)

    emit_flow_update(p, args, s, R7, R8, namespace, target, RECEIVED, out)
    emit_exit(p, out)


PROBE = Probe(
    name="udp_receive",
    summary="UDP datagrams and payload bytes received, per flow (local and remote address and port)",
    flavours=FLAVOURS,
    body=body,
    shared_maps={MAP_NAME: flows_map, TOTALS: totals_map},
    protocol="udp",
)
