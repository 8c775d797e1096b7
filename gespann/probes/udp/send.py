"""UDP datagrams sent: counted in their flow as a device is handed them (net:net_dev_queue).

The packet's owning socket (skb->sk) says it was made here, and in which
network namespace; its headers start at skb->head + skb->network_header. Only
packets of UDP sockets (sk_protocol 17) are looked at further, so a TCP packet
costs two field reads; a raw or packet socket writing its own UDP headers is
not counted. See udp_flows for the flow entry and what seeing packets at the
device implies.
"""

from __future__ import annotations

from asm import R1, R6, R7, R8, Program

from ...figures import counter
from ..connection_metrics import SHARED
from ..toolkit.arguments import Arguments
from ..toolkit.cpu_context import emit_save_context
from ..toolkit.flavours import BtfTracepoint, RawTracepoint, Tracepoint
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.probe import BuildTarget, Probe
from . import walk as udp_walk
from .flows import (
    IPPROTO_UDP,
    MAP_NAME,
    SENT,
    TOTALS,
    FlowSlots,
    emit_exit,
    emit_flow_update,
    emit_namespace,
    emit_protocol,
    flows_map,
    totals_map,
)
from .metrics import UdpMetrics

FLAVOURS = (
    BtfTracepoint("net_dev_queue", args=("skb",)),
    RawTracepoint("net_dev_queue", args=("skb",)),
    Tracepoint("net", "net_dev_queue", fields={"skb": "skbaddr"}),
)


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    types = target.kernel_types
    direct = args.btf_pointers  # skb, and the socket loaded from it, may be read with direct loads
    s, out = FlowSlots(p.frame), p.new_label("out")
    emit_save_context(p, args, s.context)
    args.load(p, R7, "skb")
    emit_read_field(p, R6, R7, types.field("sk_buff.sk"), s.scratch, direct)  # the context is not needed again
    p.jeq(R6, 0, out)  # not made by a local socket (forwarded, or a kernel reply)
    # Most packets are not UDP (TCP's go by here too): out before any header is read.
    emit_read_field(p, R1, R6, types.field("sock.sk_protocol"), s.scratch, direct)
    p.jne(R1, IPPROTO_UDP, out)
    emit_protocol(p, R7, types, direct, s.scratch, out)
    emit_read_field(p, R8, R7, types.field("sk_buff.head"), s.scratch, direct)  # a plain address from here
    emit_read_field(p, R1, R7, types.field("sk_buff.network_header"), s.scratch, direct)
    p.add(R8, R1)

    def namespace(p: Program, dst) -> None:
        emit_namespace(p, dst, R6, "sock_common.skc_net.net", types, target.netns, direct, s.scratch, out)

    emit_flow_update(p, args, s, R7, R8, namespace, target, SENT, out)
    emit_exit(p, out)


DATAGRAMS = counter("datagrams_total", ("direction",), "UDP datagrams.", dogstatsd="udp.datagrams")
FLOWS_EVICTED = counter(
    "flows_evicted_total", ("protocol",),
    "UDP flows the kernel evicted from the full flow map (config limits.udp_flows) before they went idle: counted "
    "as closed, their own figures incomplete; datagram and byte totals stay exact. Includes the flows the map "
    "refused at once (gespann_flow_inserts_failed_total).", dogstatsd="udp.flows_evicted")
FLOW_INSERTS_FAILED = counter(
    "flow_inserts_failed_total", ("protocol", "role"),
    "New UDP flows the kernel's LRU flow map refused to add: it had no entry it could reclaim at that instant, "
    "or its bucket lock was refused (the map's own limits, under eviction by several CPUs at once). Each is "
    "counted as opened and at once as closed and evicted; its datagrams and bytes are in the totals.",
    dogstatsd="udp.flow_inserts_failed")

#: The reader of both UDP probes' maps: udp_receive fills the same flows and totals, and declares nothing.
PROBE = Probe(
    name="udp_send",
    summary="UDP datagrams and payload bytes sent, per flow (local and remote address and port)",
    flavours=FLAVOURS,
    body=body,
    shared_maps={MAP_NAME: flows_map, TOTALS: totals_map},
    protocol="udp",
    metrics=(*SHARED, DATAGRAMS, FLOWS_EVICTED, FLOW_INSERTS_FAILED),
    reader=UdpMetrics.from_context,
    walk=udp_walk.KERNEL_WALK,
    checks=(udp_walk.CHECK,),
)
