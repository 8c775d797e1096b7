"""Counts TCP state transitions by the state entered: the smallest complete probe.

`state_counts[newstate]` is a per-CPU counter, so CPUs never share a cache
line; user space sums the CPUs when it reads. SCTP and MPTCP sockets, which
fire the same event, are skipped.
"""

from __future__ import annotations

from asm import R0, R2, R10, Program, W

from ..toolkit.map_calls import emit_increment
from ...bpf.maps import U64, PerCpuArrayMap
from ..toolkit import socket_state
from ..toolkit.arguments import Arguments
from ..toolkit.netns import emit_netns_check
from ..toolkit.probe import BuildTarget, Probe
from ..toolkit.socket_state import IPPROTO_TCP

#: TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12) and TCP_BOUND_INACTIVE (13), with room to spare.
STATE_SLOTS = 16


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    key = p.frame.alloc("state", size=4)
    scratch = p.frame.alloc("netns read", size=8)
    out = p.new_label("out")
    args.load(p, R2, "protocol")
    p.jne(R2, IPPROTO_TCP, out)
    if target.netns is not None:
        args.load(p, R2, "sk")
        emit_netns_check(p, R2, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    args.load(p, R2, "newstate")
    p.jge(R2, STATE_SLOTS, out)
    p.stx(W, R10, key.at(), R2)
    emit_increment(p, "state_counts", key)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


PROBE = Probe(
    name="tcp_states",
    summary="TCP state transitions, counted by the state entered",
    flavours=socket_state.FLAVOURS,
    body=body,
    derived=socket_state.DERIVED,
    maps={"state_counts": lambda: PerCpuArrayMap(U64, STATE_SLOTS, name="gsp_state_counts")},
)
