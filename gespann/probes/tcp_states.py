"""Counts TCP state transitions by the state entered, from sock:inet_sock_set_state.

`state_counts[newstate]` is a per-CPU counter, so CPUs never share a cache
line; user space sums the CPUs when it reads. The tracepoint also fires for
SCTP and MPTCP sockets, which are skipped.
"""

from __future__ import annotations

from asm import R0, R1, R2, R6, R10, W, Program

from ..bpf.counters import emit_increment
from ..bpf.maps import U64, PerCpuArrayMap
from .netns import emit_netns_check
from .probe import BuildTarget, Probe
from ..bpf.tracefs import emit_load_field

IPPROTO_TCP = 6
#: TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12) and TCP_BOUND_INACTIVE (13), with room to spare.
STATE_SLOTS = 16

_KEY_SLOT = -4
_SCRATCH_SLOT = -16


def build(target: BuildTarget) -> Program:
    fmt = target.tracepoint
    p = Program("gsp_tcp_states")
    p.mov(R6, R1)
    emit_load_field(p, fmt, R2, R6, "protocol")
    p.jne(R2, IPPROTO_TCP, "out")
    if target.netns is not None:
        emit_load_field(p, fmt, R2, R6, "skaddr")
        emit_netns_check(p, R2, target.kernel_types, target.netns, "out", _SCRATCH_SLOT)
    emit_load_field(p, fmt, R2, R6, "newstate")
    p.jge(R2, STATE_SLOTS, "out")
    p.stx(W, R10, _KEY_SLOT, R2)
    emit_increment(p, "state_counts", _KEY_SLOT)
    p.label("out")
    p.mov(R0, 0)
    p.exit()
    return p


PROBE = Probe(
    name="tcp_states",
    summary="TCP state transitions, counted by the state entered",
    category="sock",
    event="inet_sock_set_state",
    build=build,
    maps={"state_counts": lambda: PerCpuArrayMap(U64, STATE_SLOTS, name="gsp_state_counts")},
)
