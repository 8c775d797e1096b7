"""Counts TCP state transitions by the state entered.

The kernel reports every transition through the inet_sock_set_state
tracepoint, fired from exactly two functions, inet_sk_state_store and
inet_sk_set_state: the fentry and kprobe flavours hook those, and read the old
state from the socket before it changes. `state_counts[newstate]` is a per-CPU counter, so CPUs never share
a cache line; user space sums the CPUs when it reads. The tracepoint also fires
for SCTP and MPTCP sockets, which are skipped.
"""

from __future__ import annotations

from asm import R0, R2, R10, W, Program

from ..bpf.counters import emit_increment
from ..bpf.maps import U64, PerCpuArrayMap
from .events import Event
from .flavours import BtfTracepoint, Fentry, Kprobe, RawTracepoint, Tracepoint
from .netns import emit_netns_check
from .probe import BuildTarget, Probe

IPPROTO_TCP = 6
#: TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12) and TCP_BOUND_INACTIVE (13), with room to spare.
STATE_SLOTS = 16

#: The functions that fire sock:inet_sock_set_state, both `(struct sock *sk, int state)`.
STATE_FUNCTIONS = ("inet_sk_state_store", "inet_sk_set_state")

_KEY_SLOT = -12
_NETNS_SCRATCH = -24


def body(p: Program, event: Event, target: BuildTarget) -> None:
    event.load(p, R2, "protocol")
    p.jne(R2, IPPROTO_TCP, "out")
    if target.netns is not None:
        event.load(p, R2, "sk")
        emit_netns_check(p, R2, target.kernel_types, target.netns, "out", _NETNS_SCRATCH)
    event.load(p, R2, "newstate")
    p.jge(R2, STATE_SLOTS, "out")
    p.stx(W, R10, _KEY_SLOT, R2)
    emit_increment(p, "state_counts", _KEY_SLOT)
    p.label("out")
    p.mov(R0, 0)
    p.exit()


PROBE = Probe(
    name="tcp_states",
    summary="TCP state transitions, counted by the state entered",
    flavours=(
        BtfTracepoint("inet_sock_set_state", args=("sk", "oldstate", "newstate")),
        RawTracepoint("inet_sock_set_state", args=("sk", "oldstate", "newstate")),
        Tracepoint("sock", "inet_sock_set_state",
                   fields={"sk": "skaddr", "oldstate": "oldstate", "newstate": "newstate", "protocol": "protocol"}),
        Fentry(STATE_FUNCTIONS, args=("sk", "newstate")),
        Kprobe(STATE_FUNCTIONS, args=("sk", "newstate")),
    ),
    body=body,
    derived={"protocol": ("sk", "sock.sk_protocol"), "oldstate": ("sk", "sock_common.skc_state")},
    maps={"state_counts": lambda: PerCpuArrayMap(U64, STATE_SLOTS, name="gsp_state_counts")},
)
