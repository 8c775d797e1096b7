"""TCP connections whose end no run of tcp_lifecycle saw, found when the kernel frees their socket.

tcp_lifecycle counts an end at the socket's CLOSE state change and removes the
connection's entry there. An end it never sees keeps the entry: the kernel
skips a program's run when the same program is already running on that CPU
(an interrupt taking softirq work inside it), and counts the skip
(gespann_probe_runs_missed_total) without saying which figure lost an event.

Every TCP socket passes tcp:tcp_destroy_sock when it is freed, after CLOSE
(inet_csk_destroy_sock() insists on it). An entry still there is an end never
seen: counted here, by role, and removed. So such a loss is counted, never
silent, and no stale entry stays behind to be taken for a later socket at the
same address. An entry that never reached ESTABLISHED is an active open whose
outcome went unseen, counted apart: it was counted neither opened nor failed.

Not recovered: the outcome (close or reset), the bytes, the record and the
per-process counts of such an end. Connections adopted at start (by cookie)
are not looked for here.

Some ends pass neither point. The bench's soak meets, about once in 10 to 45
million loopback connections, both sockets of one connection whose CLOSE no
program on sock:inet_sock_set_state sees, gespann's or an independent
bpftrace's, with no skipped run counted by the kernel (docs/benchmarks.md,
Soak: a kernel that runs no program for an event handled in softirq over
certain tasks, which tracefs still records, as it did each client's CLOSE
there). Sometimes their free
is seen, and counted here; sometimes not, and their entries stay until the
kernel hands the address to a new socket, which at that rate takes
milliseconds. So tcp_lifecycle counts an entry it finds where a new
connection's goes the same way (emit_count_unseen), before it overwrites it.
Until an address is taken again, its lost end is not yet counted.
"""

from __future__ import annotations

from typing import Optional

from gespann.probes.authoring import (
    DW,
    R0,
    R1,
    R7,
    R8,
    R10,
    U64,
    Arguments,
    BtfTracepoint,
    BuildTarget,
    PerCpuArrayMap,
    Probe,
    Program,
    RawTracepoint,
    ReadContext,
    Reader,
    Register,
    Series,
    Slot,
    Tracepoint,
    W,
    counter,
    emit_increment,
    emit_netns_check,
)

from ...vocabulary import ROLES
from .connections import (
    CONNECTION_MAPS_WANTED,
    ENTRIES,
    ENTRY,
    MAP_NAME,
    connections_map,
    emit_forget_connection,
    emit_lookup_connection,
    entries_map,
)

COUNTS = "tcp_unseen"
#: The counts' slots: one per role (ROLES), then active opens that never reached ESTABLISHED.
OPENING = len(ROLES)
SLOTS = OPENING + 1

ENDS_UNSEEN = counter(
    "connection_ends_unseen_total", ("protocol", "role"),
    "TCP connections counted as opened whose end (close or reset) no run of gespann's program saw, found when the "
    "socket was freed or when a new socket took its address: not counted as closed or reset, and without a record "
    "or per-process counts.",
    dogstatsd="connections.unseen_ends")
OPENS_UNSEEN = counter(
    "connection_opens_unseen_total", ("protocol",),
    "TCP active opens whose outcome (established or failed) no run of gespann's program saw, found when the "
    "socket was freed or when a new socket took its address: counted neither as opened nor as failed.",
    dogstatsd="connections.unseen_opens")


def unseen_map() -> PerCpuArrayMap:
    """The counts by slot, shared with tcp_lifecycle, which counts a stale entry it finds at a new
    connection's address the same way."""
    return PerCpuArrayMap(U64, SLOTS, name="gsp_tcp_unseen")


def emit_count_unseen(p: Program, entry: Register, slot: Slot, seen: Optional[str] = None) -> None:
    """Count the connection entry at `entry` as one whose outcome no program saw: an end by its role, or an
    open if it never reached ESTABLISHED. An entry emptied by its end (times 0: socket storage, or a delete
    the map refused) was seen, and is not counted: then a jump to `seen` if given, else a fall through, as
    after a count. Clobbers R0-R5."""
    count, opening, done = p.new_label("unseen.count"), p.new_label("unseen.opening"), p.new_label("unseen.done")
    p.ldx(DW, R1, entry, ENTRY.offset("established_ns"))
    p.jeq(R1, 0, opening)
    p.ldx(W, R1, entry, ENTRY.offset("role"))
    p.jge(R1, len(ROLES), done)  # never written so: lifecycle stores a role with ESTABLISHED
    p.stx(DW, R10, slot.at(), R1)
    p.ja(count)
    p.label(opening)
    p.ldx(DW, R1, entry, ENTRY.offset("syn_sent_ns"))
    p.jeq(R1, 0, seen or done)
    p.st(DW, R10, slot.at(), OPENING)
    p.label(count)
    emit_increment(p, COUNTS, slot)
    p.label(done)


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    key, slot = p.frame.alloc("socket address", size=8), p.frame.alloc("slot", size=8)
    scratch = p.frame.alloc("read scratch", size=8)
    out = p.new_label("out")
    storage_sk = R7 if args.btf_pointers and target.kernel_walk else None
    args.load(p, R7, "sk")
    p.jeq(R7, 0, out)
    if target.netns is not None:  # a few loads, and every socket of the host is freed through here
        emit_netns_check(p, R7, target.kernel_types, target.netns, out, scratch, args.btf_pointers)
    p.stx(DW, R10, key.at(), R7)
    emit_lookup_connection(p, key, out, storage_sk)
    p.mov(R8, R0)
    emit_count_unseen(p, R8, slot, seen=out)  # an entry emptied by its end (socket storage) stays as it is
    emit_forget_connection(p, key, R8)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


class UnseenCounts(Reader):
    """The CPUs' counts summed, every series present from the start (0 until an end goes unseen)."""

    def __init__(self, context: ReadContext):
        self._counts = context.maps[COUNTS]

    def series(self) -> Series:
        counts = {slot: sum(per_cpu) for slot, per_cpu in self._counts.items()}
        return {ENDS_UNSEEN: {ENDS_UNSEEN.series(protocol="tcp", role=role): counts.get(index, 0)
                              for index, role in enumerate(ROLES)},
                OPENS_UNSEEN: {OPENS_UNSEEN.series(protocol="tcp"): counts.get(OPENING, 0)}}


PROBE = Probe(
    name="tcp_unseen_ends",
    summary="TCP connection ends no run of tcp_lifecycle saw, found when the kernel frees the socket",
    flavours=(
        BtfTracepoint("tcp_destroy_sock", args=("sk",)),
        RawTracepoint("tcp_destroy_sock", args=("sk",)),
        Tracepoint("tcp", "tcp_destroy_sock", fields={"sk": "skaddr"}),
    ),
    body=body,
    shared_maps={MAP_NAME: connections_map, ENTRIES: entries_map, COUNTS: unseen_map},
    optional_maps=CONNECTION_MAPS_WANTED,
    metrics=(ENDS_UNSEEN, OPENS_UNSEEN),
    reader=UnseenCounts,
)
