"""The life of each TCP connection, from its state changes, aggregated in the kernel.

sock:inet_sock_set_state (or the two functions that fire it) tells the
whole story:
  CLOSE -> SYN_SENT           an active open starts: remember when
  SYN_SENT -> ESTABLISHED     opened, role client; connect latency observed
  SYN_RECV -> ESTABLISHED     opened, role server
  SYN_SENT -> CLOSE           failed, the reason in sk->sk_err (or what set it: see below)
  (established) -> CLOSE      ended: close or reset; bytes, RTT, retransmits, duration

How an end is told apart. A reset received marks the entry first
(tcp:tcp_receive_reset fires in tcp_reset(), before tcp_done()), and so does a
reset sent while the socket still has its state (tcp:tcp_send_reset; since
6.10 it also fires from tcp_send_active_reset()). Otherwise the state left
decides: an orderly end enters CLOSE only from FIN_WAIT2, LAST_ACK or CLOSING,
while ESTABLISHED, SYN_RECV, CLOSE_WAIT and FIN_WAIT1 go straight to CLOSE only
when this side aborts the connection: tcp_disconnect() (close() with SO_LINGER
0), tcp_close() with unread data, tcp_abort(), keepalive or out-of-resources
timeouts. Each of those sends an RST right after the state change, and older
kernels have no tracepoint for it, so the abort itself is counted as a reset
sent, the same way on 5.10 and 6.18. (A retransmission timeout also aborts
without an RST; it is counted there too.)

A failed open's reason is the errno the kernel ended it with. The kernel
writes it to sk->sk_err a moment before the state change (the socket polls as
failed from then on; since 6.10, and stable kernels with tcp_done_with_error(),
sock:inet_sk_error_report fires only after CLOSE and reads sk_err again, so it
cannot help), and an application that reads SO_ERROR in that moment clears it.
So when CLOSE finds sk_err empty, the errno is taken from what the kernel set it
from: a reset received (tcp_resets marked the entry before tcp_reset() wrote
it): ECONNREFUSED; the SYN's retransmission timer giving up (its handler has
cleared icsk_pending, which is never 0 in SYN_SENT otherwise): the soft error,
else ETIMEDOUT; an ICMP error this host sent about the SYN after it went out
(tcp_icmp_errors: neighbours that never answer, routers and firewalls on this
host). Left: an ICMP error from another machine, taken by the application,
counts as "aborted" (errno 0), as does a connect the application closes; and
a timeout whose soft error the application also took (two reads in that
moment) counts as ETIMEDOUT.

Payload bytes. Sent means payload transmitted at least once: `bytes_sent`
less `bytes_retrans` (4.19+), whatever the outcome. So a connection reset with
data in flight (sent, not yet acknowledged) counts that data as sent, as the
peer that received it counts it as received, and both sides of one connection
agree. (Data lost in flight and never retransmitted before a reset is counted
by the sender alone.) Kernels without those fields fall back to `bytes_acked`,
acknowledged sequence space, less the client's SYN and this side's FIN once
acked (an orderly end; a reset from FIN_WAIT2), which misses what was in
flight at a reset. Received is `bytes_received`, which includes the peer's FIN:
taken off when it came, which the state left tells: an orderly end has it
unless it leaves FIN_WAIT2 before that FIN came (close() of a socket already in
FIN_WAIT2 hands it to a timewait socket at once; a FIN_WAIT2 timeout), which
the socket's SOCK_DONE flag tells; a reset has it only from CLOSE_WAIT,
LAST_ACK or CLOSING.

Socket storage. Where the kernel walk of open connections runs (tcp_walk.py:
5.12+, and this probe sees the socket as a BTF pointer), an end adds to the
row only what the walks have not counted of its payload (the walk's COUNTED
storage, swapped for ENDED), and a connection's entry that the connection map
has no room for lives in the socket's storage (tcp_connections.ENTRIES), so no
end goes untracked. An untracked end still counts its bytes there.

Records. When the build target carries a record channel, each end (and each
failed open) also sends one `connection_records.RECORD`, and the entry keeps
the process that owns the connection: see connection_records for which
process that is and why.

By process. When per-process labels are asked for, each end and failed open
is also counted in `tcp_by_process`, a hash keyed by the owner's cgroup id and
comm: by outcome, with its payload bytes. Counted when it happens, exact at any
rate (records, which user space reads later, are lost when their buffer is
full). The map is capped; once full, a new owner is counted under the OTHER
key, which user space made at the start, so nothing goes uncounted.

By peer. When per-peer labels are asked for (labels.peers), each open, end and
failed open is also counted in its peer's row (peers.py: a client's remote
endpoint, and the backend behind a DNAT; a server's local port), the same
amounts the totals row gets, at the same moment.

Events never seen. The kernel does not run this program for an event that
fires while it is already running on that CPU (gespann_probe_runs_missed_total
counts those). An end never seen leaves its entry, which tcp_unseen_ends counts
when the socket is freed; an ESTABLISHED never seen leaves an active open's
SYN_SENT entry, whose end then counts as untracked (its open was never counted).
A socket freed with neither its CLOSE nor its free seen leaves its entry to the
next socket at its address: a new connection's entry is stored only as new
(BPF_NOEXIST), and one found there is counted unseen before it is overwritten.
"""

from __future__ import annotations

import errno
from typing import Optional

from asm import DW, R0, R1, R2, R4, R6, R7, R8, R9, R10, B, Frame, H, Program, Record, Register, Slot, W, u64

from ...bpf.maps import U32, U64, HashMap
from ...bpf.syscall import UpdateFlags
from ...figures import counter, histogram
from ...vocabulary import ROLES
from ..connection_metrics import SHARED
from ..toolkit import socket_state
from ..toolkit.arguments import Arguments
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.map_calls import emit_map_delete, emit_map_lookup, emit_map_update
from ..toolkit.netns import emit_netns_check
from ..toolkit.probe import BuildTarget, Probe
from ..toolkit.record_codec import RecordCodec
from ..toolkit.record_output import emit_record_output
from ..toolkit.socket_state import (  # noqa: F401 - the states are part of this module's vocabulary
    CLOSE,
    CLOSE_WAIT,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT1,
    FIN_WAIT2,
    IPPROTO_TCP,
    LAST_ACK,
    LISTEN,
    PEER_FIN_IN,
    SYN_RECV,
    SYN_SENT,
)
from ..toolkit.stack import emit_zero
from . import icmp_errors as tcp_icmp_errors
from . import peers
from . import records as connection_records
from . import walk as tcp_walk
from .connections import (
    ADOPTED,
    CLIENT,
    CONNECTION_MAPS_WANTED,
    ENTRIES,
    ENTRY,
    MAP_NAME,
    RESET_RECEIVED,
    RESET_SENT,
    SERVER,
    adopted_map,
    connections_map,
    emit_forget_connection,
    emit_lookup_adopted,
    emit_lookup_connection,
    emit_store_connection,
    entries_map,
)
from .metrics import TcpMetrics
from .nat import CHECK as nat_check
from .peers import PeerSlots, emit_peer_count, emit_peer_key, emit_peer_other
from .records import RECORD, emit_capture_process, emit_copy_process, emit_read_addresses
from .totals import (
    BY_PROCESS,
    BY_PROCESS_COUNTS,
    BYTES_RECEIVED_SLOT,
    BYTES_SENT_SLOT,
    FAILED_ERRNOS,
    FAILURE_ERRNOS,
    OTHER_OWNER,
    OWNER,
    STATS,
    Totals,
    by_process_capacity,
    emit_add,
    emit_add_indexed,
    emit_observe,
    emit_row_pointer,
    emit_saturating_sub,
    stats_map,
)
from .unseen_ends import COUNTS as UNSEEN_COUNTS
from .unseen_ends import emit_count_unseen, unseen_map
from .walk import COUNTED, COUNTED_MAP, counted_map, emit_counted_get

#: States only an abort by this side leaves straight for CLOSE.
ABORTED_FROM = (ESTABLISHED, SYN_RECV, CLOSE_WAIT, FIN_WAIT1)
#: States whose CLOSE ends a connection (or a failed open) that has an entry, unless it was evicted
#: from a full map or began before gespann started.
TRACKED_FROM = (SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)
#: enum sock_flags: set when the peer's FIN arrives (tcp_fin), and by nothing else on the way to CLOSE.
SOCK_DONE = 1

#: tcp_sock counters read at an end, each in a u64 slot (bytes_acked only where bytes_sent is missing).
TCP_COUNTERS = ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "total_retrans", "srtt_us")
_COUNTERS = Record("tcp_counters", [(name, u64) for name in TCP_COUNTERS])
#: Payload transmitted at least once, when the kernel has the fields (4.19+).
TRANSMITTED = ("bytes_sent", "bytes_retrans")


def counters_read(types) -> tuple[str, ...]:
    """The TCP_COUNTERS this kernel's tcp_sock has that an end needs."""
    if all(types.optional_field(f"tcp_sock.{name}") is not None for name in TRANSMITTED):
        return tuple(name for name in TCP_COUNTERS if name != "bytes_acked")
    return tuple(name for name in TCP_COUNTERS if name not in TRANSMITTED)


def uses_storage(target: BuildTarget, direct: bool) -> bool:
    """Whether the program keeps each connection's COUNTED storage for the kernel walk (tcp_walk):
    where the walk runs, and the socket is a BTF pointer, as bpf_sk_storage_get wants it."""
    return direct and target.kernel_walk


class _Slots:
    """The program's stack slots; the record's and the by-process ones only when the target needs them."""

    def __init__(self, frame: Frame, target: BuildTarget) -> None:
        def u64_slot(name: str) -> Slot:
            return frame.alloc(name, size=8)

        self.key = u64_slot("socket address")  # the connections map key
        self.scratch = u64_slot("read scratch")
        self.oldstate = u64_slot("oldstate")
        self.our_fin_acked = u64_slot("our FIN acked")
        self.peer_fin_in = u64_slot("peer FIN in")
        self.row_key = u64_slot("row key")
        self.icmp_key = frame.alloc("ICMP error key", tcp_icmp_errors.KEY)
        # A failed open's errno, as the errno map's key: in the ICMP key's first bytes, whose lookup is over by
        # then (the stack holds every slot of records, per-process and per-peer counts together only so).
        self.errno_key = self.icmp_key
        self.one = u64_slot("one")
        self.entry = frame.alloc("entry", ENTRY)
        self.record = frame.alloc("record", RECORD) if target.records is not None else None
        self.counters = frame.alloc("tcp counters", _COUNTERS)
        if target.by_process:  # the end's outcome and payload, and the owner key
            self.outcome, self.sent, self.received = u64_slot("outcome"), u64_slot("sent"), u64_slot("received")
            self.owner = frame.alloc("owner", OWNER)
            self.new_row = frame.alloc("new owner's row", size=BY_PROCESS_COUNTS.sizeof())
        self.cookie = u64_slot("cookie")  # the socket's cookie, when its end looks for an adopted entry
        self.adopted = u64_slot("adopted")  # 1 when the entry is an adopted one (keyed by cookie)
        # At an end: payload in the socket's own terms, and how much of it the row has already (tcp_walk).
        self.absolute = u64_slot("absolute payload")
        self.counted_sent = u64_slot("counted sent")
        self.counted_received = u64_slot("counted received")
        self.untracked_sent = u64_slot("untracked sent") if target.peers else None


class _Build:
    """What the steps of one program share: what it is built for, its slots, and the labels that steps
    jump to across each other (each made here, placed by exactly one step)."""

    def __init__(self, p: Program, target: BuildTarget, direct: bool) -> None:
        self.p, self.target, self.direct = p, target, direct  # direct: R7, the socket, takes direct loads
        self.records, self.by_process = target.records is not None, target.by_process
        self.storage = uses_storage(target, direct)
        self.entry_in = R7 if self.storage else None  # the entry in the socket's storage, or the map
        self.s = _Slots(p.frame, target)
        self.out = p.new_label("out")
        # CLOSE's steps
        self.close_entry, self.adopted, self.untracked = (p.new_label(name) for name in
                                                           ("close.entry", "adopted", "untracked"))
        self.failed, self.forget, self.unopened = p.new_label("failed"), p.new_label("forget"), p.new_label("unopened")
        self.by_process_step = p.new_label("by_process") if self.by_process else None
        # Counts by peer (peers.py); its key slots lent by the per-process step, which comes after it.
        self.peer = (PeerSlots(p.frame, *((self.s.new_row, self.s.owner) if self.by_process else (None, None)),
                               scratch=self.s.scratch) if target.peers else None)
        self.peers_step = p.new_label("peers") if target.peers else None
        self.record_step = p.new_label("record") if self.records else None
        #: Where a counted end goes next: its owner's counts, its record, then the entry is forgotten.
        self.counted = self.peers_step or self.by_process_step or self.record_step or self.forget

    def count_stale(self, p: Program) -> None:
        """An entry (R0) found where a new connection's goes: an earlier socket at the address whose end
        (or open's outcome) no program saw, counted as unseen before it is overwritten. Clobbers R0-R5."""
        emit_count_unseen(p, R0, self.s.row_key)

    @property
    def types(self):
        return self.target.kernel_types

    def store_in_record(self, size, field: str, value) -> None:
        if self.records:
            self.p.stx(size, R10, self.s.record.at(field), value)

    def store_for_peer(self, field: str, value) -> None:
        """What the event adds to its peer's row (PeerSlots), when peers are counted."""
        if self.peer is not None:
            slot = getattr(self.peer, field)
            if isinstance(value, Register):  # a Register is an int too: test it first
                self.p.stx(DW, R10, slot.at(), value)
            else:
                self.p.st(DW, R10, slot.at(), value)


def body(p: Program, args: Arguments, target: BuildTarget) -> None:
    b = _Build(p, target, args.btf_pointers)
    s = b.s
    steps = {SYN_SENT: p.new_label("syn_sent"), ESTABLISHED: p.new_label("established"), CLOSE: p.new_label("close")}
    if target.knows_process:
        steps[FIN_WAIT1] = steps[LAST_ACK] = p.new_label("closing")
    # The new state first: it is an argument, and about half of all changes (FIN_WAIT2,
    # CLOSE_WAIT, TIME_WAIT, ...) matter to nothing here, so they leave before any read.
    followed = p.new_label("followed")
    args.load(p, R8, "newstate")
    for state in steps:
        p.jeq32(R8, state, followed)
    p.ja(b.out)
    p.label(followed)
    args.load(p, R2, "protocol")
    p.jne(R2, IPPROTO_TCP, b.out)
    args.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, b.out, s.scratch, b.direct)
    args.load(p, R2, "oldstate")
    p.stx(DW, R10, s.oldstate.at(), R2)
    p.stx(DW, R10, s.key.at(), R7)
    for state, step in steps.items():
        p.jeq32(R8, state, step)
    p.ja(b.out)

    _emit_syn_sent(b, steps[SYN_SENT])
    _emit_established(b, steps[ESTABLISHED])
    _emit_close(b, steps[CLOSE])
    if target.knows_process:
        _emit_closing(b, steps[FIN_WAIT1])

    p.label(b.out)
    p.mov(R0, 0)
    p.exit()


def _emit_syn_sent(b: _Build, at: str) -> None:
    """An active open starts: an entry with its time (and its process)."""
    p, s = b.p, b.s
    p.label(at)
    emit_zero(p, s.entry)
    p.call("ktime_get_ns")
    p.stx(DW, R10, s.entry.at("syn_sent_ns"), R0)
    if b.target.knows_process:
        emit_capture_process(p, s.entry, ENTRY)
    emit_store_connection(p, s.key, s.entry, b.entry_in, on_stale=b.count_stale)
    p.ja(b.out)


def _emit_established(b: _Build, at: str) -> None:
    """A new connection: entry with its start, role and ports; opened counted; connect latency."""
    p, s = b.p, b.s
    client, server, fill, stale = (p.new_label(f"established.{name}") for name in ("client", "server", "fill", "stale"))
    p.label(at)
    emit_zero(p, s.entry)
    p.ldx(DW, R1, R10, s.oldstate.at())
    p.jeq32(R1, SYN_SENT, client)
    p.jeq32(R1, SYN_RECV, server)
    p.ja(b.out)

    p.label(client)
    p.st(W, R10, s.entry.at("role"), CLIENT)
    emit_lookup_connection(p, s.key, fill, b.entry_in)
    p.ldx(DW, R1, R0, ENTRY.offset("established_ns"))
    p.jne(R1, 0, stale)  # not this open's SYN_SENT entry (that run went unseen): an earlier socket's
    p.ldx(DW, R1, R0, ENTRY.offset("syn_sent_ns"))
    p.stx(DW, R10, s.entry.at("syn_sent_ns"), R1)
    if b.target.knows_process:
        emit_copy_process(p, R0, ENTRY, s.entry)
    p.ja(fill)
    p.label(stale)
    b.count_stale(p)
    p.ja(fill)

    p.label(server)
    p.st(W, R10, s.entry.at("role"), SERVER)

    p.label(fill)
    _emit_new_entry(b)
    _emit_count_opened(b)


def _emit_new_entry(b: _Build) -> None:
    """The established connection's entry, with its start and ports, stored (its old counts zeroed)."""
    p, s = b.p, b.s
    p.call("ktime_get_ns")
    p.stx(DW, R10, s.entry.at("established_ns"), R0)
    emit_read_field(p, R1, R7, b.types.field("sock_common.skc_num"), s.scratch, b.direct)
    p.stx(H, R10, s.entry.at("local_port"), R1)
    emit_read_field(p, R1, R7, b.types.field("sock_common.skc_dport"), s.scratch, b.direct)
    p.stx(H, R10, s.entry.at("remote_port"), R1)
    client, stored = p.new_label("new_entry.client"), p.new_label("new_entry.stored")
    p.ldx(W, R1, R10, s.entry.at("role"))
    p.jeq(R1, CLIENT, client)
    emit_store_connection(p, s.key, s.entry, b.entry_in, on_stale=b.count_stale)  # a new socket
    p.ja(stored)
    p.label(client)
    emit_store_connection(p, s.key, s.entry, b.entry_in)  # over its own SYN_SENT entry
    p.label(stored)
    if b.storage:
        _emit_storage_reset(p)


def _emit_count_opened(b: _Build) -> None:
    """Opened, by role; a client's connect latency."""
    p, s = b.p, b.s
    emit_row_pointer(p, STATS, R9, s.row_key, b.out)
    p.ldx(W, R8, R10, s.entry.at("role"))
    emit_add_indexed(p, R9, Totals.OPENED, R8, len(ROLES), 1, b.out)
    if b.peer is not None:
        counted = p.new_label("opened.peer")
        b.peer.clear(p)
        b.store_for_peer("outcome", peers.Slots.OPENED)
        p.mov(R1, R8)
        p.ldx(H, R2, R10, s.entry.at("local_port"))
        emit_peer_key(p, b.peer, R7, b.types, b.direct, bool(b.target.networks))
        emit_peer_count(p, b.peer, counted, figures=False)
        p.label(counted)
    p.ldx(DW, R1, R10, s.entry.at("syn_sent_ns"))
    p.jeq(R1, 0, b.out)
    p.ldx(DW, R4, R10, s.entry.at("established_ns"))
    p.sub(R4, R1)
    emit_observe(p, R9, Totals.CONNECT_LATENCY, R4)
    p.ja(b.out)


def _emit_close(b: _Build, at: str) -> None:
    """CLOSE: a failed active open, or the end of a connection; the entry goes either way."""
    p, s = b.p, b.s
    p.label(at)
    p.st(DW, R10, s.adopted.at(), 0)
    emit_lookup_connection(p, s.key, b.adopted, b.entry_in)
    p.label(b.close_entry)
    p.mov(R8, R0)
    if b.records:
        emit_zero(p, s.record)
    emit_row_pointer(p, STATS, R9, s.row_key, b.forget)
    if b.peer is not None:
        b.peer.clear(p)
    p.ldx(DW, R1, R10, s.oldstate.at())
    p.jeq32(R1, SYN_SENT, b.failed)
    p.ldx(DW, R1, R8, ENTRY.offset("established_ns"))
    p.jeq(R1, 0, b.unopened)

    figures = p.new_label("ended")
    _emit_outcome(b, figures)
    p.label(figures)
    _emit_end_figures(b)
    p.ja(b.counted)

    _emit_failed(b)
    if b.peer is not None:
        _emit_count_by_peer(b)
    if b.by_process:
        _emit_count_by_process(b)
    if b.records:
        _emit_record(b)
    _emit_forget(b)  # the record falls through to here
    _emit_unopened(b)
    _emit_adopted(b)
    _emit_untracked(b)


def _emit_outcome(b: _Build, done: str) -> None:
    """The end's outcome (close, or a reset either way) counted, and which FINs are in the byte counts
    (s.our_fin_acked, s.peer_fin_in); then a jump to `done`."""
    p, s = b.p, b.s
    aborted, reset, orderly = p.new_label("aborted"), p.new_label("reset"), p.new_label("orderly.counted")
    p.st(DW, R10, s.our_fin_acked.at(), 0)
    p.st(DW, R10, s.peer_fin_in.at(), 0)
    p.ldx(W, R1, R8, ENTRY.offset("reset"))
    p.jne(R1, 0, reset)
    p.ldx(DW, R2, R10, s.oldstate.at())
    for state in ABORTED_FROM:
        p.jeq32(R2, state, aborted)
    p.st(DW, R10, s.our_fin_acked.at(), 1)
    p.st(DW, R10, s.peer_fin_in.at(), 1)
    p.jne32(R2, FIN_WAIT2, orderly)
    # From FIN_WAIT2 the peer's FIN is in only if it arrived (SOCK_DONE): close() of a socket
    # already in FIN_WAIT2, and its timeout, end it before any FIN.
    _emit_peer_fin_arrived(b, b.direct)
    p.label(orderly)
    p.ldx(W, R4, R8, ENTRY.offset("role"))
    emit_add_indexed(p, R9, Totals.CLOSED, R4, len(ROLES), 1, b.unopened)  # no role: said, as untracked
    b.store_for_peer("outcome", peers.Slots.CLOSED)
    if b.records:
        p.st(B, R10, s.record.at("outcome"), connection_records.CLOSE)
    if b.by_process:
        p.st(DW, R10, s.outcome.at(), connection_records.CLOSE)
    p.ja(done)

    p.label(aborted)
    p.mov(R1, RESET_SENT)
    p.label(reset)
    _emit_reset(b, done)


def _emit_reset(b: _Build, done: str) -> None:
    """A reset (its mark in R1) counted by direction; our FIN is acked only from FIN_WAIT2, the peer's is in
    from the states that had it. Then a jump to `done` (or a fall through to it)."""
    p, s = b.p, b.s
    peer_fin, peer_fin_in = p.new_label("reset.peer_fin"), p.new_label("reset.peer_fin_in")
    p.sub(R1, RESET_SENT)  # the mark, as an index into RESET_DIRECTIONS
    p.mov(R4, R1)
    emit_add_indexed(p, R9, Totals.RESET, R4, RESET_RECEIVED - RESET_SENT + 1, 1, b.unopened)
    if b.peer is not None:
        p.mov(R1, R4)
        p.add(R1, peers.Slots.RESET)
        b.store_for_peer("outcome", R1)
    if b.records:
        p.stx(H, R10, s.record.at("reason"), R4)
        p.st(B, R10, s.record.at("outcome"), connection_records.RESET)
    if b.by_process:
        p.st(DW, R10, s.outcome.at(), connection_records.RESET)
    p.ldx(DW, R2, R10, s.oldstate.at())
    p.jne32(R2, FIN_WAIT2, peer_fin)
    p.st(DW, R10, s.our_fin_acked.at(), 1)
    p.label(peer_fin)
    for state in PEER_FIN_IN:
        p.jeq32(R2, state, peer_fin_in)
    p.ja(done)
    p.label(peer_fin_in)
    p.st(DW, R10, s.peer_fin_in.at(), 1)


def _emit_peer_fin_arrived(b: _Build, direct: bool) -> None:
    """s.peer_fin_in = the socket's (R7) SOCK_DONE flag: whether the peer's FIN came. Clobbers R0-R5."""
    p = b.p
    emit_read_field(p, R1, R7, b.types.field("sock_common.skc_flags"), b.s.scratch, direct)
    p.rsh(R1, SOCK_DONE)
    p.and_(R1, 1)
    p.stx(DW, R10, b.s.peer_fin_in.at(), R1)


def _emit_end_figures(b: _Build) -> None:
    """The ended connection's payload, retransmits, RTT and duration: into the row, the record and the
    owner's counts."""
    p, s = b.p, b.s
    _emit_read_tcp_counters(b)
    _emit_take_counted(b)
    _emit_sent_payload(b)
    p.ldx(DW, R4, R10, s.counters.at("bytes_received"))
    p.ldx(DW, R2, R10, s.peer_fin_in.at())
    emit_saturating_sub(p, R4, R2)
    _emit_payload(b, "received_at_start", s.counted_received, "received", "bytes_received", Totals.BYTES_RECEIVED)
    p.ldx(DW, R4, R10, s.counters.at("total_retrans"))
    b.store_in_record(W, "retransmits", R4)
    b.store_for_peer("retransmits", R4)
    emit_add(p, R9, Totals.RETRANSMITS, R4)
    p.ldx(DW, R4, R10, s.counters.at("srtt_us"))
    p.rsh(R4, 3)
    b.store_in_record(W, "srtt_us", R4)
    emit_observe(p, R9, Totals.RTT, R4)
    p.call("ktime_get_ns")
    b.store_in_record(DW, "end_ns", R0)
    p.ldx(DW, R1, R8, ENTRY.offset("established_ns"))
    p.mov(R4, R0)
    p.sub(R4, R1)
    b.store_in_record(DW, "duration_ns", R4)
    emit_observe(p, R9, Totals.DURATION, R4)


def _emit_sent_payload(b: _Build) -> None:
    """The payload sent: transmitted at least once where the kernel tells, else acknowledged sequence
    space less the client's SYN and our FIN once acked."""
    p, s = b.p, b.s
    if "bytes_sent" in counters_read(b.types):
        p.ldx(DW, R4, R10, s.counters.at("bytes_sent"))
        p.ldx(DW, R2, R10, s.counters.at("bytes_retrans"))
    else:
        no_syn = p.new_label("ended.no_syn")
        p.ldx(DW, R4, R10, s.counters.at("bytes_acked"))
        p.ldx(DW, R2, R10, s.our_fin_acked.at())
        p.ldx(W, R1, R8, ENTRY.offset("role"))
        p.jne(R1, CLIENT, no_syn)
        p.add(R2, 1)
        p.label(no_syn)
    emit_saturating_sub(p, R4, R2)
    _emit_payload(b, "sent_at_start", s.counted_sent, "sent", "bytes_sent", Totals.BYTES_SENT)


def _emit_forget(b: _Build) -> None:
    """The ended connection's entry removed: by address, or its adopted one (by cookie)."""
    p, s = b.p, b.s
    adopted = p.new_label("forget.adopted")
    p.label(b.forget)
    p.ldx(DW, R1, R10, s.adopted.at())
    p.jne(R1, 0, adopted)
    emit_forget_connection(p, s.key, R8)
    p.ja(b.out)
    p.label(adopted)
    emit_map_delete(p, ADOPTED, s.cookie)
    p.ja(b.out)


def _emit_storage_reset(p: Program) -> None:
    """A connection established (socket in R7): COUNTED storage the socket kept from a connection before
    is zeroed (tcp_disconnect() zeroes its counters, and it may connect again). A new socket has none
    (the walk makes it), and the lookup finds that at once. Clobbers R0-R5."""
    none = p.new_label("storage.none")
    emit_counted_get(p, R7)
    p.jeq(R0, 0, none)
    for field in COUNTED.fields:
        p.st(DW, R0, COUNTED.offset(field.name), 0)
    p.label(none)


def _emit_swap_counted(b: _Build) -> None:
    """s.counted_sent and s.counted_received: what walks counted of the connection, from its COUNTED storage
    (in R0), swapped for ENDED at once so that no walk adds more."""
    for field, slot in (("sent", b.s.counted_sent), ("received", b.s.counted_received)):
        b.p.mov(R1, -1)  # ENDED
        b.p.atomic_xchg(DW, R0, COUNTED.offset(field), R1)
        b.p.stx(DW, R10, slot.at(), R1)


def _emit_take_counted(b: _Build) -> None:
    """s.counted_sent and s.counted_received: how much of the connection's payload the row has already. With
    storage, what walks counted (_emit_swap_counted); otherwise (or if the socket has none) its payload at
    start: 0, or an adopted connection's figures then."""
    p, s = b.p, b.s
    p.ldx(DW, R1, R8, ENTRY.offset("sent_at_start"))
    p.stx(DW, R10, s.counted_sent.at(), R1)
    p.ldx(DW, R1, R8, ENTRY.offset("received_at_start"))
    p.stx(DW, R10, s.counted_received.at(), R1)
    if not b.storage:
        return
    none = p.new_label("counted.none")
    emit_counted_get(p, R7)
    p.jeq(R0, 0, none)
    _emit_swap_counted(b)
    p.label(none)


def _emit_payload(b: _Build, at_start: str, counted: Slot, way: str, record_field: str, row_slot: int) -> None:
    """The payload one `way` (R4, in the socket's own terms): since start into the record and the
    owner's counts, and what the row lacks of it into the row. Clobbers R1-R4."""
    p, s = b.p, b.s
    p.stx(DW, R10, s.absolute.at(), R4)
    p.ldx(DW, R2, R8, ENTRY.offset(at_start))  # 0 but for an adopted connection
    emit_saturating_sub(p, R4, R2)
    b.store_in_record(DW, record_field, R4)
    if b.by_process:
        p.stx(DW, R10, getattr(s, way).at(), R4)
    p.ldx(DW, R4, R10, s.absolute.at())
    p.ldx(DW, R2, R10, counted.at())
    emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, row_slot, R4)
    b.store_for_peer(way, R4)


def _emit_count_by_peer(b: _Build) -> None:
    """The end just counted, counted again in its peer's row (peers.py): the entry (R8) gives the role,
    the local port and the drops. Goes on to the owner's counts, the record, or to forget the entry."""
    p = b.p
    p.label(b.peers_step)
    p.ldx(W, R1, R8, ENTRY.offset("drops"))
    b.store_for_peer("drops", R1)
    p.ldx(W, R1, R8, ENTRY.offset("role"))
    p.ldx(H, R2, R8, ENTRY.offset("local_port"))
    emit_peer_key(p, b.peer, R7, b.types, b.direct, bool(b.target.networks))
    if b.records:  # now: the key's slot may be lent to the next step
        p.ldx(H, R1, R10, b.peer.key.at("backend_port"))
        b.store_in_record(H, "backend_port", R1)
        p.ldx(W, R1, R10, b.peer.key.at("backend"))
        b.store_in_record(W, "backend_address", R1)
    next_step = b.by_process_step or b.record_step or b.forget
    emit_peer_count(p, b.peer, next_step)
    p.ja(next_step)


def _emit_count_by_process(b: _Build) -> None:
    """The end just counted, counted again under its owner (the entry at R8): the outcome in s.outcome, the
    payload in s.sent and s.received. A new owner gets a zeroed row; once the map is full, OTHER_OWNER's row
    (made by user space) takes the count. Goes on to the record, or to forget the entry."""
    p, s = b.p, b.s
    next_step = b.record_step or b.forget
    count = p.new_label("by_process.count")
    p.label(b.by_process_step)
    p.ldx(DW, R1, R8, ENTRY.offset("cgroup_id"))
    p.stx(DW, R10, s.owner.at("cgroup_id"), R1)
    for offset in (0, 8):
        p.ldx(DW, R1, R8, ENTRY.offset("comm") + offset)
        p.stx(DW, R10, s.owner.at("comm", offset), R1)
    _emit_owner_lookup(b, count)
    emit_zero(p, s.new_row)
    # Full (E2BIG), or made by another CPU first (EEXIST): look again either way.
    emit_map_update(p, BY_PROCESS, s.owner, s.new_row, UpdateFlags.NOEXIST)
    _emit_owner_lookup(b, count)
    p.st(DW, R10, s.owner.at("cgroup_id"), -1)  # the map is full: OTHER_OWNER's row
    p.st(DW, R10, s.owner.at("comm"), 0)
    p.st(DW, R10, s.owner.at("comm", 8), 0)
    _emit_owner_lookup(b, count)
    p.ja(next_step)

    p.label(count)
    p.ldx(DW, R1, R10, s.outcome.at())
    emit_add_indexed(p, R0, 0, R1, len(connection_records.OUTCOMES), 1, next_step)
    p.ldx(DW, R1, R10, s.sent.at())
    p.atomic_add(DW, R0, 8 * BYTES_SENT_SLOT, R1)
    p.ldx(DW, R1, R10, s.received.at())
    p.atomic_add(DW, R0, 8 * BYTES_RECEIVED_SLOT, R1)
    p.ja(next_step)


def _emit_owner_lookup(b: _Build, found: str) -> None:
    """R0 = tcp_by_process[the owner in s.owner]; a jump to `found` if there is one. Clobbers R0-R5."""
    emit_map_lookup(b.p, BY_PROCESS, b.s.owner)
    b.p.jne(R0, 0, found)


def _emit_unopened(b: _Build) -> None:
    """CLOSE of an entry that cannot be counted as an end: an active open whose ESTABLISHED went unseen (the
    open was never counted), or an entry without a role. Its entry goes, and the end is counted as untracked,
    bytes and all: said, never silent."""
    b.p.label(b.unopened)
    emit_forget_connection(b.p, b.s.key, R8)
    b.p.ja(b.untracked)


def _emit_adopted(b: _Build) -> None:
    """CLOSE without an entry by address: a connection adopted at start (by its cookie) ends as any other."""
    p, s = b.p, b.s
    p.label(b.adopted)
    p.ldx(DW, R1, R10, s.oldstate.at())
    p.jeq32(R1, SYN_SENT, b.untracked)  # an open in progress at start was never adopted
    emit_lookup_adopted(p, R7, b.types.field("sock_common.skc_cookie.counter"), s.cookie, s.scratch,
                        b.direct, b.untracked)
    p.st(DW, R10, s.adopted.at(), 1)
    p.ja(b.close_entry)


def _emit_untracked(b: _Build) -> None:
    """CLOSE without an entry: counted as untracked when it ends a connection or an open (a
    listener's or a never-established server socket's CLOSE has no entry to miss). With the walk's
    storage its bytes are still counted exactly: what walks have not counted yet goes to the row."""
    p = b.p
    count = p.new_label("untracked.count")
    p.label(b.untracked)
    p.ldx(DW, R1, R10, b.s.oldstate.at())
    for state in TRACKED_FROM:
        p.jeq32(R1, state, count)
    p.ja(b.out)
    p.label(count)
    emit_row_pointer(p, STATS, R9, b.s.row_key, b.out)
    emit_add(p, R9, Totals.UNTRACKED, 1)
    if b.storage:
        _emit_untracked_bytes(b)
    p.ja(b.out)


def _emit_untracked_bytes(b: _Build) -> None:
    """The payload of an untracked end (socket in R7, a BTF pointer; row in R9) that walks have not
    counted: its storage swapped for ENDED, the rest added. Its FIN is in as at any end: from
    CLOSE_WAIT, LAST_ACK or CLOSING, and from FIN_WAIT2 once SOCK_DONE says it came."""
    p, s = b.p, b.s
    fin, counted = p.new_label("untracked.fin"), p.new_label("untracked.counted")
    emit_counted_get(p, R7)
    p.jeq(R0, 0, b.out)  # never walked: there is nothing of it in the row, nor anything to go by
    _emit_swap_counted(b)
    p.st(DW, R10, s.peer_fin_in.at(), 0)
    p.ldx(DW, R2, R10, s.oldstate.at())
    for state in PEER_FIN_IN:
        p.jeq32(R2, state, fin)
    p.jne32(R2, FIN_WAIT2, counted)
    _emit_peer_fin_arrived(b, direct=True)
    p.ja(counted)
    p.label(fin)
    p.st(DW, R10, s.peer_fin_in.at(), 1)
    p.label(counted)
    _emit_untracked_payload(b)


def _emit_untracked_payload(b: _Build) -> None:
    """What the row lacks of an untracked end's payload, read from its tcp_sock (R7), added to the row (R9)."""
    p, s, types = b.p, b.s, b.types
    p.mov(R1, R7)
    p.call("skc_to_tcp_sock")
    p.jeq(R0, 0, b.out)
    p.ldx(DW, R4, R0, types.field("tcp_sock.bytes_sent").offset)
    p.ldx(DW, R2, R0, types.field("tcp_sock.bytes_retrans").offset)
    emit_saturating_sub(p, R4, R2)
    p.ldx(DW, R2, R10, s.counted_sent.at())
    emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, Totals.BYTES_SENT, R4)
    if b.peer is not None:
        p.stx(DW, R10, s.untracked_sent.at(), R4)
    p.ldx(DW, R4, R0, types.field("tcp_sock.bytes_received").offset)
    p.ldx(DW, R2, R10, s.peer_fin_in.at())
    emit_saturating_sub(p, R4, R2)
    p.ldx(DW, R2, R10, s.counted_received.at())
    emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, Totals.BYTES_RECEIVED, R4)
    if b.peer is not None:  # no entry, so no role nor peer: counted in the clients' OTHER row
        b.peer.clear(p)
        b.store_for_peer("received", R4)
        p.ldx(DW, R4, R10, s.untracked_sent.at())
        b.store_for_peer("sent", R4)
        emit_peer_other(p, b.peer, CLIENT)
        emit_peer_count(p, b.peer, b.out)


def _emit_read_tcp_counters(b: _Build) -> None:
    """The TCP_COUNTERS of the socket in R7, each into its u64 in s.counters. Clobbers R0-R5.

    The verifier types R7 as a struct sock, too small for tcp_sock's fields: with
    direct loads, bpf_skc_to_tcp_sock (5.9+) gives the same address typed as a
    tcp_sock, for one cheap call instead of a read per field.
    """
    p, s = b.p, b.s
    fields = [(s.counters.at(name), b.types.field(f"tcp_sock.{name}")) for name in counters_read(b.types)]
    done = p.new_label("counters.done")
    if b.direct:
        read = p.new_label("counters.read")
        p.mov(R1, R7)
        p.call("skc_to_tcp_sock")
        p.jeq(R0, 0, read)  # not a full TCP socket (never at an end): read as elsewhere
        for at, field in fields:
            emit_read_field(p, R1, R0, field, s.scratch, direct=True)
            p.stx(DW, R10, at, R1)
        p.ja(done)
        p.label(read)
    for at, field in fields:
        emit_read_field(p, R1, R7, field, s.scratch)
        p.stx(DW, R10, at, R1)
    p.label(done)


def _emit_record(b: _Build) -> None:
    """The record of the end just counted: what the entry knows, the addresses, and out it goes."""
    p, s = b.p, b.s
    p.label(b.record_step)
    p.ldx(W, R1, R8, ENTRY.offset("role"))
    p.stx(B, R10, s.record.at("role"), R1)
    # The local port as ESTABLISHED saw it: by CLOSE the kernel has released it (skc_num is 0),
    # and a failed open never had one for sure. The remote port stays on the socket.
    p.ldx(H, R1, R8, ENTRY.offset("local_port"))
    p.stx(H, R10, s.record.at("local_port"), R1)
    emit_read_field(p, R1, R7, b.types.field("sock_common.skc_dport"), s.scratch, b.direct)
    p.stx(H, R10, s.record.at("remote_port"), R1)
    emit_copy_process(p, R8, ENTRY, s.record)
    for field in ("drops", "drop_reason"):
        p.ldx(W, R1, R8, ENTRY.offset(field))
        p.stx(W, R10, s.record.at(field), R1)
    p.ldx(DW, R1, R10, s.adopted.at())
    p.stx(B, R10, s.record.at("preexisting"), R1)
    emit_read_addresses(p, R7, b.types, s.record, s.scratch, b.direct)
    emit_record_output(p, b.target.records, R6, s.record)


def _emit_closing(b: _Build, at: str) -> None:
    """FIN_WAIT1 or LAST_ACK: close() or shutdown(), in the owner's context; a server's owner is known now."""
    p = b.p
    p.label(at)
    emit_lookup_connection(p, b.s.key, b.out, b.entry_in)
    p.mov(R8, R0)
    p.ldx(W, R1, R8, ENTRY.offset("pid"))
    p.jne(R1, 0, b.out)
    emit_capture_process(p, R8, ENTRY)
    p.ja(b.out)


def _emit_failed(b: _Build) -> None:
    """SYN_SENT -> CLOSE: counted by sk->sk_err, a named reason or the errno itself."""
    p, s = b.p, b.s
    p.label(b.failed)
    if b.records:
        p.call("ktime_get_ns")
        p.stx(DW, R10, s.record.at("end_ns"), R0)
        p.ldx(DW, R1, R8, ENTRY.offset("syn_sent_ns"))
        p.sub(R0, R1)
        p.stx(DW, R10, s.record.at("duration_ns"), R0)
        p.st(B, R10, s.record.at("outcome"), connection_records.FAILED)
    if b.by_process:
        p.st(DW, R10, s.outcome.at(), connection_records.FAILED)
        p.st(DW, R10, s.sent.at(), 0)
        p.st(DW, R10, s.received.at(), 0)
    _emit_failure_errno(b)
    b.store_in_record(H, "reason", R4)
    for index, (reason, number) in enumerate(FAILURE_ERRNOS.items()):
        other = p.new_label(f"failed.not_{reason}")
        p.jne32(R4, number, other)
        emit_add(p, R9, Totals.FAILED + index, 1)
        b.store_for_peer("outcome", peers.Slots.FAILED + index)
        p.ja(b.counted)
        p.label(other)
    _emit_count_errno(b)


def _emit_failure_errno(b: _Build) -> None:
    """R4 = the errno a failed open (entry at R8, socket at R7) ended with. sk_err while the application has
    not taken it; otherwise what the kernel set it from: a reset received (ECONNREFUSED), or the SYN's
    retransmission timer giving up (the soft error, else ETIMEDOUT). Else 0: closed by the application,
    or an ICMP error the application took (see the module docstring). Clobbers R0-R5."""
    p, s, types = b.p, b.s, b.types
    known, timer = p.new_label("failed.errno"), p.new_label("failed.timer")
    emit_read_field(p, R4, R7, types.field("sock.sk_err"), s.scratch, b.direct)
    p.jne(R4, 0, known)
    p.mov(R4, errno.ECONNREFUSED)  # tcp_reset() marks the entry (tcp_resets) before it sets sk_err
    p.ldx(W, R1, R8, ENTRY.offset("reset"))
    p.jeq(R1, RESET_RECEIVED, known)
    # In SYN_SENT the retransmission timer is always pending, but while its handler runs: the handler
    # clears icsk_pending before tcp_retransmit_timer(), which gives up through tcp_write_err().
    emit_read_field(p, R4, R7, types.field("inet_connection_sock.icsk_pending"), s.scratch)
    p.jeq(R4, 0, timer)
    _emit_icmp_errno(b, known)
    p.label(timer)
    emit_read_field(p, R4, R7, types.field("sock.sk_err_soft"), s.scratch)
    p.jne(R4, 0, known)
    p.mov(R4, errno.ETIMEDOUT)
    p.label(known)


def _emit_icmp_errno(b: _Build, known: str) -> None:
    """R4 = the errno of an ICMP error this host sent about the failed open's SYN after it was sent
    (tcp_icmp_errors), or 0; then a jump to `known`. Clobbers R0-R5."""
    p, s, types = b.p, b.s, b.types
    key = s.icmp_key
    for field, at in (("sock_common.skc_rcv_saddr", key.at("saddr")), ("sock_common.skc_daddr", key.at("daddr")),
                      ("inet_sock.inet_sport", key.at("ports")), ("sock_common.skc_dport", key.at("ports") + 2)):
        emit_read_field(p, R1, R7, types.field(field), s.scratch)
        p.stx(W if field.endswith("addr") else H, R10, at, R1)
    emit_map_lookup(p, tcp_icmp_errors.MAP_NAME, key)
    p.mov(R4, 0)
    p.jeq(R0, 0, known)
    p.ldx(DW, R1, R0, tcp_icmp_errors.VALUE.offset("sent_ns"))
    p.ldx(DW, R2, R8, ENTRY.offset("syn_sent_ns"))
    p.jlt(R1, R2, known)  # about a segment of an earlier connection with the same addresses and ports
    p.ldx(W, R4, R0, tcp_icmp_errors.VALUE.offset("errno"))
    p.ja(known)


def _emit_count_errno(b: _Build) -> None:
    """A failed open's errno (R4) without a reason of its own, counted in the errno map."""
    p, s = b.p, b.s
    count = p.new_label("failed.count")
    b.store_for_peer("outcome", peers.Slots.FAILED_OTHER)
    p.stx(W, R10, s.errno_key.at(), R4)
    emit_map_lookup(p, FAILED_ERRNOS, s.errno_key)
    p.jne(R0, 0, count)
    p.st(DW, R10, s.one.at(), 1)
    emit_map_update(p, FAILED_ERRNOS, s.errno_key, s.one, UpdateFlags.NOEXIST)
    p.jeq32(R0, 0, b.counted)
    emit_map_lookup(p, FAILED_ERRNOS, s.errno_key)  # another CPU inserted it first: add to its count
    p.jeq(R0, 0, b.counted)
    p.label(count)
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.ja(b.counted)


def by_process_map(capacity: Optional[int] = None, target: Optional[BuildTarget] = None) -> HashMap:
    """(cgroup id, comm) -> ends by outcome and payload bytes; OTHER_OWNER's row is made here, first. Sized
    by limits.tcp_by_process where set, else from labels.max_series."""
    if capacity is None:
        capacity = by_process_capacity(target.max_series if target is not None else BuildTarget.max_series)
    counts = HashMap(RecordCodec(OWNER), BY_PROCESS_COUNTS, capacity, name="gsp_tcp_owners")
    counts[OTHER_OWNER] = (0,) * 5
    return counts


def failed_errnos_map() -> HashMap:
    """errno -> failed connects, for errnos without a reason of their own (few in practice)."""
    return HashMap(U32, U64, 64, name="gsp_tcp_errnos")


RESETS = counter("connections_reset_total", ("direction",), "TCP connections ended by a reset, by who sent it.",
                 dogstatsd="connections.reset")
FAILURES = counter(
    "connections_failed_total", ("reason",),
    "TCP active opens that never reached ESTABLISHED, by the errno the kernel ended them with (read before the "
    "application can take it, but for an ICMP error from another machine); aborted: closed by the application.",
    dogstatsd="connections.failed")
RETRANSMITS = counter("retransmits_total", (), "TCP segments retransmitted.", dogstatsd="tcp.retransmits")
RTT = histogram("rtt_seconds", (), "Smoothed TCP round-trip time of each connection, observed when it ends.",
                dogstatsd="tcp.rtt_seconds")
CONNECT_LATENCY = histogram("connect_latency_seconds", (),
                            "Time from SYN sent to ESTABLISHED for each TCP active open.",
                            dogstatsd="tcp.connect_latency_seconds")
ENDS_UNTRACKED = counter(
    "connection_ends_untracked_total", ("protocol",),
    "TCP connection ends seen without gespann's entry for the connection, so not counted as closed or reset: "
    "evicted from a full connection map (config limits.tcp_connections), open before gespann started and not "
    "adopted (the adopted map, as large, was full), or an active open whose ESTABLISHED no run of gespann's "
    "program saw (see gespann_connection_ends_unseen_total).", dogstatsd="connections.untracked")


PROBE = Probe(
    name="tcp_lifecycle",
    summary="TCP connections opened, ended (close, reset) and failed, with bytes, RTT and timings",
    flavours=socket_state.FLAVOURS,
    body=body,
    derived=socket_state.DERIVED,
    maps={STATS: stats_map, FAILED_ERRNOS: failed_errnos_map, BY_PROCESS: by_process_map,
          COUNTED_MAP: counted_map, **peers.MAPS},
    shared_maps={MAP_NAME: connections_map, ENTRIES: entries_map, ADOPTED: adopted_map,
                 tcp_icmp_errors.MAP_NAME: tcp_icmp_errors.errors_map, UNSEEN_COUNTS: unseen_map,
                 **peers.SHARED_MAPS},
    optional_maps={BY_PROCESS: lambda target: target.by_process, COUNTED_MAP: lambda target: target.kernel_walk,
                   **CONNECTION_MAPS_WANTED, **peers.MAPS_WANTED},
    metrics=(*SHARED, RESETS, FAILURES, RETRANSMITS, RTT, CONNECT_LATENCY, ENDS_UNTRACKED, *peers.METRICS),
    reader=TcpMetrics.from_context,
    records=connection_records.decoder,
    walk=tcp_walk.KERNEL_WALK,
    checks=(tcp_walk.CHECK, nat_check),
)
