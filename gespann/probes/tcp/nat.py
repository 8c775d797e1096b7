"""Which backend a destination NAT sent a TCP connection to: read from conntrack as its first packets leave.

A client of a Kubernetes Service dials the Service's virtual IP; netfilter
rewrites the destination (DNAT, kube-proxy's rules) to one backend. The socket
keeps the address it dialed, so tcp_lifecycle alone reports the Service. This
probe finds the backend where the kernel made the translation, in the
conntrack entry the packet carries (skb->_nfct, its low bits the ctinfo):

  net:net_dev_queue   a packet handed to a device. A connection's packets
                      carry their conntrack entry until they cross into
                      another namespace (veth scrubs it on receipt, after this
                      point), so the entry seen here is the one of the
                      namespace the packet leaves from:
                      - a host-network client: DNAT in OUTPUT, its own SYN;
                      - a pod's client: DNAT in the node's PREROUTING, the SYN
                        forwarded to the backend's veth, in the node's namespace
                        (the pod's socket never sees that entry).

Only entries with IPS_DST_NAT set and IPS_SEEN_REPLY clear are read: a
connection's first packets (its SYN, and retransmitted ones), before any answer,
so an established connection's traffic costs one load and one read. From the
entry: the original tuple (what the application dialed: its address and port,
and the Service's) and the reply tuple's source (the backend). The probe keeps
original tuple -> backend in `tcp_nat`, an LRU hash; tcp_lifecycle looks its
own 4-tuple up there when it counts a connection by peer (peers.py), at its
open, by the walk, at its end or failure. The map is gespann's, so the answer
stays when conntrack has long forgotten the entry, and a connect refused by
the backend (no reply seen, then an RST: conntrack's entry is dying) is
attributed to that backend. A Service without endpoints, whose SYN a REJECT rule
answers with a reset, is never translated: its failures stay on the Service.

IPv4 only. The lookup is by the 4-tuple alone: two namespaces with the same
tuple at once (two pods each dialing the same Service from the same address
and port) would share an answer. Kernel types come from BTF: nf_conn is in
vmlinux when conntrack is built in, in the module's split BTF
(/sys/kernel/btf/nf_conntrack) when it is a module. Without either (a vendored
table, no conntrack), the probe is left out and `gespann check` says so:
connections are then counted by the address they dialed.
"""

from __future__ import annotations

import functools
import socket
from typing import NamedTuple, Union

from asm import DW, R0, R1, R6, R7, R10, H, Program, W

from ...bpf.syscall import UpdateFlags
from ..toolkit.arguments import Arguments
from ..toolkit.flavours import BtfTracepoint, RawTracepoint, Tracepoint
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.map_calls import emit_map_lookup, emit_map_update
from ..toolkit.probe import BuildTarget, CheckContext, CheckLine, Probe
from .peers import NAT, NAT_BACKEND, NAT_KEY, NAT_SEEN, SHARED_MAPS

#: enum ip_conntrack_status bits, and the low bits of skb->_nfct that hold the ctinfo (NFCT_INFOMASK).
IPS_SEEN_REPLY, IPS_DST_NAT = 1 << 1, 1 << 5
NFCT_INFOMASK = 7
IPPROTO_TCP = 6
CONNTRACK_MODULE = "nf_conntrack"

FLAVOURS = (
    BtfTracepoint("net_dev_queue", args=("skb",)),
    RawTracepoint("net_dev_queue", args=("skb",)),
    Tracepoint("net", "net_dev_queue", fields={"skb": "skbaddr"}),
)
_ORIGINAL, _REPLY = "tuplehash[0].tuple", "tuplehash[1].tuple"
#: What the program reads, by name: the struct and member path of each.
FIELDS = {
    "nfct": ("sk_buff", "_nfct"),
    "status": ("nf_conn", "status"),
    "l3num": ("nf_conn", f"{_ORIGINAL}.src.l3num"),
    "protonum": ("nf_conn", f"{_ORIGINAL}.dst.protonum"),
    "saddr": ("nf_conn", f"{_ORIGINAL}.src.u3.ip"),
    "sport": ("nf_conn", f"{_ORIGINAL}.src.u.all"),
    "daddr": ("nf_conn", f"{_ORIGINAL}.dst.u3.ip"),
    "dport": ("nf_conn", f"{_ORIGINAL}.dst.u.all"),
    "backend": ("nf_conn", f"{_REPLY}.src.u3.ip"),
    "backend_port": ("nf_conn", f"{_REPLY}.src.u.all"),
}


class ConntrackLayout(NamedTuple):
    """Where the fields are (FieldLocations by FIELDS name), and which BTF told."""

    fields: dict
    source: str


@functools.lru_cache(maxsize=None)
def conntrack_layout(btf_source: str = "auto") -> Union[ConntrackLayout, str]:
    """The conntrack fields from the running kernel's BTF (vmlinux, else the module's split BTF), or why
    there are none."""
    from ...btf import BTFError
    from ...btf.fieldpath import locate
    from ...btf.sources import SYSFS_BTF, kernel_has_btf, load_module, load_vmlinux

    if btf_source not in ("auto", "btf"):
        return f"btf.source is {btf_source}: conntrack's types are read from the running kernel's BTF only"
    if not kernel_has_btf():
        return "the kernel exposes no BTF, where conntrack's types come from"
    try:
        vmlinux = load_vmlinux()
        fields = {name: locate(vmlinux, *FIELDS[name]) for name in ("nfct",)}
    except BTFError as err:
        return f"no skb->_nfct in the kernel's BTF (no conntrack): {err}"
    specs = [("vmlinux", vmlinux)]
    if (SYSFS_BTF / CONNTRACK_MODULE).exists():
        specs.append((f"module {CONNTRACK_MODULE}'s split BTF", None))
    why = "conntrack is neither built in nor a loaded module with BTF"
    for where, spec in specs:
        try:
            spec = spec if spec is not None else load_module(CONNTRACK_MODULE)
            located = {name: locate(spec, *path) for name, path in FIELDS.items() if name != "nfct"}
        except BTFError as err:
            why = f"{where}: {str(err).splitlines()[0]}"
            continue
        return ConntrackLayout({**fields, **located}, where)
    return why


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    layout = conntrack_layout(target.btf_source)
    if isinstance(layout, str):
        from ...btf import BTFError

        raise BTFError(f"tcp_nat: {layout}")
    at = layout.fields
    scratch = p.frame.alloc("scratch", size=8)
    key, backend = p.frame.alloc("original tuple", NAT_KEY), p.frame.alloc("backend", NAT_BACKEND)
    out = p.new_label("out")
    args.load(p, R7, "skb")
    emit_read_field(p, R6, R7, at["nfct"], scratch, args.btf_pointers)  # the context is not needed again
    p.and_(R6, ~NFCT_INFOMASK)
    p.jeq(R6, 0, out)
    # The entry is a plain address from here: every read a probe read.
    emit_read_field(p, R1, R6, at["status"], scratch)
    p.and_(R1, IPS_DST_NAT | IPS_SEEN_REPLY)
    p.jne(R1, IPS_DST_NAT, out)
    emit_read_field(p, R1, R6, at["protonum"], scratch)
    p.jne(R1, IPPROTO_TCP, out)
    emit_read_field(p, R1, R6, at["l3num"], scratch)
    p.jne(R1, socket.AF_INET, out)
    for name, slot, size in (("saddr", key, W), ("daddr", key, W), ("sport", key, H), ("dport", key, H),
                             ("backend", backend, W), ("backend_port", backend, H)):
        emit_read_field(p, R1, R6, at[name], scratch)
        field = {"backend": "address", "backend_port": "port"}.get(name, name)
        p.stx(size, R10, slot.at(field), R1)
    p.st(H, R10, backend.at("pad"), 0)
    emit_map_update(p, NAT, key, backend, UpdateFlags.ANY)
    p.st(W, R10, scratch.at(), 0)
    emit_map_lookup(p, NAT_SEEN, scratch)  # tcp_lifecycle looks backends up from now on
    p.jeq(R0, 0, out)
    p.st(DW, R0, 0, 1)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


def _wanted(config) -> bool:
    return bool(getattr(config, "label_peers", False)) and \
        not isinstance(conntrack_layout(getattr(config, "btf_source", "auto")), str)


def describe(context: CheckContext) -> str:
    """How connections behind a DNAT are counted by peer here, and why."""
    if not context.settings.peers:
        return "not resolved: labels.peers is off"
    layout = conntrack_layout(context.settings.btf_source)
    if isinstance(layout, str):
        return f"by the address dialed only (backends not resolved): {layout}"
    return (f"service and backend: conntrack entries read as the first packets leave (net_dev_queue), types from "
            f"{layout.source}")


CHECK = CheckLine("nat", "NAT backends", describe, when_left_out="not resolved")

PROBE = Probe(
    name="tcp_nat",
    summary="the backend a DNAT (a Service's virtual IP) sent each TCP connection to, for per-peer labels",
    flavours=FLAVOURS,
    body=body,
    shared_maps=SHARED_MAPS,
    wanted=_wanted,
)
