"""Counts TCP state transitions by the state entered: the smallest complete probe.

Complete: where it attaches, the program, its map, the metric it declares
and the reader that turns the map into the metric's series. It imports only
the public authoring module, as a probe outside gespann's tree does; read it
(and `gespann disasm tcp_states --syntax dsl`) before writing a new one.

`state_counts[newstate]` is a per-CPU counter, so CPUs never share a cache
line; user space sums the CPUs when it reads. SCTP and MPTCP sockets, which
fire the same event, are skipped.
"""

from __future__ import annotations

from gespann.probes.authoring import (
    R0,
    R2,
    R10,
    U64,
    Arguments,
    BuildTarget,
    PerCpuArrayMap,
    Probe,
    Program,
    ReadContext,
    Reader,
    Series,
    W,
    counter,
    emit_increment,
    emit_netns_check,
    socket_state,
)

#: TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12) and TCP_BOUND_INACTIVE (13), with room to spare.
STATE_SLOTS = 16
COUNTS = "state_counts"
#: enum tcp_state's names (include/net/tcp_states.h), for the label; a state without one is shown by number.
STATE_NAMES = {1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait",
               7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing", 12: "new_syn_recv",
               13: "bound_inactive"}

TRANSITIONS = counter("tcp_state_transitions_total", ("state",),
                      "TCP state transitions, by the state entered (enum tcp_state, lower case).",
                      dogstatsd="tcp.state_transitions")


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    key = p.frame.alloc("state", size=4)
    scratch = p.frame.alloc("netns read", size=8)
    out = p.new_label("out")
    args.load(p, R2, "protocol")
    p.jne(R2, socket_state.IPPROTO_TCP, out)
    if target.netns is not None:
        args.load(p, R2, "sk")
        emit_netns_check(p, R2, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    args.load(p, R2, "newstate")
    p.jge(R2, STATE_SLOTS, out)
    p.stx(W, R10, key.at(), R2)
    emit_increment(p, COUNTS, key)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class StateCounts(Reader):
    """Each state entered at least once, as one series: the CPUs' counts summed."""

    def __init__(self, context: ReadContext):
        self._counts = context.maps[COUNTS]

    def series(self) -> Series:
        entered = {state: sum(per_cpu) for state, per_cpu in self._counts.items()}
        return {TRANSITIONS: {TRANSITIONS.series(state=STATE_NAMES.get(state, str(state))): n
                              for state, n in entered.items() if n}}


PROBE = Probe(
    name="tcp_states",
    summary="TCP state transitions, counted by the state entered",
    flavours=socket_state.FLAVOURS,
    body=body,
    derived=socket_state.DERIVED,
    maps={COUNTS: lambda: PerCpuArrayMap(U64, STATE_SLOTS, name="gsp_state_counts")},
    metrics=(TRANSITIONS,),
    reader=StateCounts,
)
