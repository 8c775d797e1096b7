"""Counts TCP state transitions by the state entered, from sock:inet_sock_set_state.

`state_counts[newstate]` is a per-CPU counter: no atomics and no contention on
the hot path; user space sums the CPUs when it reads. The tracepoint also fires
for SCTP and MPTCP sockets, which are skipped.
"""

from __future__ import annotations

from asm import DW, R0, R1, R2, R6, R10, W, Program

from ..bpf.maps import U64, PerCpuArrayMap
from ..bpf.tracefs import TracepointFormat
from .probe import Probe
from .tracepoint import load_field

IPPROTO_TCP = 6
#: TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12) and TCP_BOUND_INACTIVE (13), with room to spare.
STATE_SLOTS = 16


def build(fmt: TracepointFormat) -> Program:
    p = Program("gsp_tcp_states")
    p.mov(R6, R1)
    load_field(p, fmt, R2, R6, "protocol")
    p.jne(R2, IPPROTO_TCP, "out")
    load_field(p, fmt, R2, R6, "newstate")
    p.jge(R2, STATE_SLOTS, "out")
    p.stx(W, R10, -4, R2)
    p.ld_map(R1, "state_counts")
    p.mov(R2, R10)
    p.add(R2, -4)
    p.call("map_lookup_elem")
    p.jeq(R0, 0, "out")
    p.ldx(DW, R1, R0, 0)
    p.add(R1, 1)
    p.stx(DW, R0, 0, R1)
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
