"""The life of each TCP connection, from its state changes, aggregated in the kernel.

sock:inet_sock_set_state (or the two functions that fire it) tells the
whole story:
  CLOSE -> SYN_SENT           an active open starts: remember when
  SYN_SENT -> ESTABLISHED     opened, role client; connect latency observed
  SYN_RECV -> ESTABLISHED     opened, role server
  SYN_SENT -> CLOSE           failed, the reason in sk->sk_err
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

A failed open's reason is sk->sk_err as the state change finds it. The
kernel sets it a moment before (the socket polls as failed from then on), so
an application that reads SO_ERROR, which clears it, in those microseconds
leaves no reason: that open counts as failed, reason "aborted" (errno 0).

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
"""

from __future__ import annotations

import errno

from asm import B, DW, R0, R1, R2, R4, R6, R7, R8, R9, R10, H, Program, Record, W, array, u8, u64

from ..bpf.maps import U32, U64, HashMap, StructCodec
from ..bpf.syscall import UpdateFlags
from . import connection_records, socket_state
from .connection_records import RECORD, emit_capture_process, emit_copy_process, emit_read_addresses
from .events import Event
from .kernel_memory import emit_read_field
from .map_calls import emit_map_delete, emit_map_lookup, emit_map_update
from .netns import emit_netns_check
from ..figures import counter, histogram
from .connection_metrics import SHARED
from .probe import BuildTarget, Probe
from .reading import ReadContext, Reader
from .record_codec import RecordCodec
from .socket_state import IPPROTO_TCP
from .tcp_walk import COUNTED, COUNTED_MAP, counted_map, emit_counted_get
from .stack import emit_zero
from .tcp_connections import (
    ADOPTED,
    CLIENT,
    ENTRY,
    ENTRIES,
    MAP_NAME,
    RESET_RECEIVED,
    RESET_SENT,
    SERVER,
    adopted_map,
    connections_map,
    emit_lookup_adopted,
    emit_forget_connection,
    emit_lookup_connection,
    emit_store_connection,
    entries_map,
    CONNECTION_MAPS_WANTED,
)
from ..vocabulary import FAILURE_REASONS, ROLES
from .tcp_stats import (
    Layout,
    emit_add,
    emit_add_indexed,
    emit_observe,
    emit_row_pointer,
    stats_map,
)

from .socket_state import (  # noqa: F401 - the states are part of this module's vocabulary
    CLOSE, CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, LISTEN, PEER_FIN_IN, SYN_RECV, SYN_SENT,
)
#: States only an abort by this side leaves straight for CLOSE.
ABORTED_FROM = (ESTABLISHED, SYN_RECV, CLOSE_WAIT, FIN_WAIT1)
#: States whose CLOSE ends a connection (or a failed open) that has an entry, unless it was evicted
#: from a full map or began before gespann started.
TRACKED_FROM = (SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)
#: enum sock_flags: set when the peer's FIN arrives (tcp_fin), and by nothing else on the way to CLOSE.
SOCK_DONE = 1

FAILURE_ERRNOS = dict(zip(FAILURE_REASONS, (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                                            errno.ENETUNREACH)))

STATS = "tcp_stats"
FAILED_ERRNOS = "tcp_failed_errnos"
BY_PROCESS = "tcp_by_process"
#: Owners the kernel tells apart per label set the config allows (labels.max_series): one label set can be
#: several owners (a comm in several cgroups, say). Past that, owners count under OTHER_OWNER.
OWNERS_PER_SERIES = 4
#: The by-process map's key: the owner's cgroup id and comm. OTHER_OWNER stands for every owner past the cap.
OWNER = Record("tcp_owner", [("cgroup_id", u64), ("comm", array(u8, 16))])
OTHER_OWNER = {"cgroup_id": (1 << 64) - 1, "comm": bytes(16)}
#: The by-process map's value: ends by outcome (connection_records.OUTCOMES), then payload bytes.
BY_PROCESS_COUNTS = StructCodec("=5Q")
BYTES_SENT_SLOT, BYTES_RECEIVED_SLOT = 3, 4

# Stack slots; -8 is the events' scratch slot.
_KEY = -16  # the socket address: the connections map key
_READ_SCRATCH = -24
_OLDSTATE = -32
_OUR_FIN_ACKED = -40
_PEER_FIN_IN = -48
_ROW_KEY = -56
_ERRNO_KEY = -60
_ONE = -72
_ENTRY = -72 - ENTRY.size
_RECORD = _ENTRY - RECORD.size  # only with records
#: tcp_sock counters read at an end, each in a u64 slot (bytes_acked only where bytes_sent is missing).
TCP_COUNTERS = ("bytes_sent", "bytes_retrans", "bytes_acked", "bytes_received", "total_retrans", "srtt_us")
_COUNTERS = _RECORD - 8 * len(TCP_COUNTERS)
# Only with by-process counts: the end's outcome and payload, and the owner key.
_OUTCOME = _COUNTERS - 8
_SENT = _OUTCOME - 8
_RECEIVED = _SENT - 8
_OWNER = _RECEIVED - OWNER.size
_NEW_ROW = _OWNER - BY_PROCESS_COUNTS.sizeof()  # a zeroed row for a new owner
_COOKIE = _NEW_ROW - 8  # the socket's cookie, when its end looks for an adopted entry
_ADOPTED = _COOKIE - 8  # 1 when the entry is an adopted one (keyed by cookie)
# At an end: payload in the socket's own terms, and how much of it the row has already (tcp_walk).
_ABSOLUTE = _ADOPTED - 8
_COUNTED_SENT = _ABSOLUTE - 8
_COUNTED_RECEIVED = _COUNTED_SENT - 8
#: Payload transmitted at least once, when the kernel has the fields (4.19+).
TRANSMITTED = ("bytes_sent", "bytes_retrans")


def _counter(name: str) -> int:
    return _COUNTERS + 8 * TCP_COUNTERS.index(name)


def counters_read(types) -> tuple[str, ...]:
    """The TCP_COUNTERS this kernel's tcp_sock has that an end needs."""
    if all(types.optional_field(f"tcp_sock.{name}") is not None for name in TRANSMITTED):
        return tuple(name for name in TCP_COUNTERS if name != "bytes_acked")
    return tuple(name for name in TCP_COUNTERS if name not in TRANSMITTED)


def _entry(field: str) -> int:
    return _ENTRY + ENTRY.offset(field)


def _record(field: str) -> int:
    return _RECORD + RECORD.offset(field)


def uses_storage(target: BuildTarget, direct: bool) -> bool:
    """Whether the program keeps each connection's COUNTED storage for the kernel walk (tcp_walk):
    where the walk runs, and the socket is a BTF pointer, as bpf_sk_storage_get wants it."""
    return direct and target.kernel_walk


def body(p: Program, event: Event, target: BuildTarget) -> None:
    direct = event.btf_pointers  # R7, the socket, may be read with direct loads
    entry_in = R7 if uses_storage(target, direct) else None  # the entry in the socket's storage, or the map
    # The new state first: it is an argument, and about half of all changes (FIN_WAIT2,
    # CLOSE_WAIT, TIME_WAIT, ...) matter to nothing here, so they leave before any read.
    event.load(p, R8, "newstate")
    for state in (SYN_SENT, ESTABLISHED, CLOSE) + ((FIN_WAIT1, LAST_ACK) if target.knows_process else ()):
        p.jeq32(R8, state, "followed")
    p.ja("out")
    p.label("followed")
    event.load(p, R2, "protocol")
    p.jne(R2, IPPROTO_TCP, "out")
    event.load(p, R7, "sk")
    if target.netns is not None:
        emit_netns_check(p, R7, target.kernel_types, target.netns, "out", _READ_SCRATCH, direct)
    event.load(p, R2, "oldstate")
    p.stx(DW, R10, _OLDSTATE, R2)
    p.stx(DW, R10, _KEY, R7)
    p.jeq32(R8, SYN_SENT, "syn_sent")
    p.jeq32(R8, ESTABLISHED, "established")
    p.jeq32(R8, CLOSE, "close")
    if target.knows_process:
        p.jeq32(R8, FIN_WAIT1, "closing")
        p.jeq32(R8, LAST_ACK, "closing")
    p.ja("out")

    p.label("syn_sent")
    emit_zero(p, ENTRY, _ENTRY)
    p.call("ktime_get_ns")
    p.stx(DW, R10, _entry("syn_sent_ns"), R0)
    if target.knows_process:
        emit_capture_process(p, R10, ENTRY, _ENTRY)
    emit_store_connection(p, _KEY, _ENTRY, entry_in)
    p.ja("out")

    _emit_established(p, target, direct, entry_in)
    _emit_close(p, target, direct, entry_in)
    if target.knows_process:
        _emit_closing(p, entry_in)

    p.label("out")
    p.mov(R0, 0)
    p.exit()


def _emit_established(p: Program, target: BuildTarget, direct: bool, entry_in) -> None:
    """A new connection: entry with its start, role and ports; opened counted; connect latency."""
    p.label("established")
    emit_zero(p, ENTRY, _ENTRY)
    p.ldx(DW, R1, R10, _OLDSTATE)
    p.jeq32(R1, SYN_SENT, "established.client")
    p.jeq32(R1, SYN_RECV, "established.server")
    p.ja("out")

    p.label("established.client")
    p.st(W, R10, _entry("role"), CLIENT)
    emit_lookup_connection(p, _KEY, "established.fill", entry_in)
    p.ldx(DW, R1, R0, ENTRY.offset("syn_sent_ns"))
    p.stx(DW, R10, _entry("syn_sent_ns"), R1)
    if target.knows_process:
        emit_copy_process(p, R0, ENTRY, _ENTRY, ENTRY)
    p.ja("established.fill")

    p.label("established.server")
    p.st(W, R10, _entry("role"), SERVER)

    p.label("established.fill")
    p.call("ktime_get_ns")
    p.stx(DW, R10, _entry("established_ns"), R0)
    types = target.kernel_types
    emit_read_field(p, R1, R7, types.field("sock_common.skc_num"), _READ_SCRATCH, direct)
    p.stx(H, R10, _entry("local_port"), R1)
    emit_read_field(p, R1, R7, types.field("sock_common.skc_dport"), _READ_SCRATCH, direct)
    p.stx(H, R10, _entry("remote_port"), R1)
    emit_store_connection(p, _KEY, _ENTRY, entry_in)
    if uses_storage(target, direct):
        _emit_storage_reset(p)

    emit_row_pointer(p, STATS, R9, _ROW_KEY, "out")
    p.ldx(W, R8, R10, _entry("role"))
    emit_add_indexed(p, R9, Layout.OPENED, R8, len(ROLES), 1, "out")
    p.ldx(DW, R1, R10, _entry("syn_sent_ns"))
    p.jeq(R1, 0, "out")
    p.ldx(DW, R4, R10, _entry("established_ns"))
    p.sub(R4, R1)
    emit_observe(p, R9, Layout.CONNECT_LATENCY, R4)
    p.ja("out")


def _emit_close(p: Program, target: BuildTarget, direct: bool, entry_in) -> None:
    """CLOSE: a failed active open, or the end of a connection; the entry goes either way."""
    records, by_process = target.records is not None, target.by_process
    # Where a counted end goes next: its owner's counts, its record, then the entry is forgotten.
    ended = "by_process" if by_process else "record" if records else "forget"
    p.label("close")
    p.st(DW, R10, _ADOPTED, 0)
    emit_lookup_connection(p, _KEY, "adopted", entry_in)
    p.label("close.entry")
    p.mov(R8, R0)
    if records:
        emit_zero(p, RECORD, _RECORD)
    emit_row_pointer(p, STATS, R9, _ROW_KEY, "forget")
    p.ldx(DW, R1, R10, _OLDSTATE)
    p.jeq32(R1, SYN_SENT, "failed")
    p.ldx(DW, R1, R8, ENTRY.offset("established_ns"))
    p.jeq(R1, 0, "forget")

    # The outcome, and which FINs are in the byte counts.
    p.st(DW, R10, _OUR_FIN_ACKED, 0)
    p.st(DW, R10, _PEER_FIN_IN, 0)
    p.ldx(W, R1, R8, ENTRY.offset("reset"))
    p.jne(R1, 0, "reset")
    p.ldx(DW, R2, R10, _OLDSTATE)
    for state in ABORTED_FROM:
        p.jeq32(R2, state, "aborted")
    p.st(DW, R10, _OUR_FIN_ACKED, 1)
    p.st(DW, R10, _PEER_FIN_IN, 1)
    p.jne32(R2, FIN_WAIT2, "orderly.counted")
    # From FIN_WAIT2 the peer's FIN is in only if it arrived (SOCK_DONE): close() of a socket
    # already in FIN_WAIT2, and its timeout, end it before any FIN.
    emit_read_field(p, R1, R7, target.kernel_types.field("sock_common.skc_flags"), _READ_SCRATCH, direct)
    p.rsh(R1, SOCK_DONE)
    p.and_(R1, 1)
    p.stx(DW, R10, _PEER_FIN_IN, R1)
    p.label("orderly.counted")
    p.ldx(W, R4, R8, ENTRY.offset("role"))
    emit_add_indexed(p, R9, Layout.CLOSED, R4, len(ROLES), 1, "forget")
    if records:
        p.st(B, R10, _record("outcome"), connection_records.CLOSE)
    if by_process:
        p.st(DW, R10, _OUTCOME, connection_records.CLOSE)
    p.ja("ended")

    p.label("aborted")
    p.mov(R1, RESET_SENT)
    p.label("reset")
    p.sub(R1, RESET_SENT)  # the mark, as an index into RESET_DIRECTIONS
    p.mov(R4, R1)
    emit_add_indexed(p, R9, Layout.RESET, R4, RESET_RECEIVED - RESET_SENT + 1, 1, "forget")
    if records:
        p.stx(H, R10, _record("reason"), R4)
        p.st(B, R10, _record("outcome"), connection_records.RESET)
    if by_process:
        p.st(DW, R10, _OUTCOME, connection_records.RESET)
    p.ldx(DW, R2, R10, _OLDSTATE)
    p.jne32(R2, FIN_WAIT2, "reset.peer_fin")
    p.st(DW, R10, _OUR_FIN_ACKED, 1)
    p.label("reset.peer_fin")
    for state in PEER_FIN_IN:
        p.jeq32(R2, state, "reset.peer_fin_in")
    p.ja("ended")
    p.label("reset.peer_fin_in")
    p.st(DW, R10, _PEER_FIN_IN, 1)

    p.label("ended")
    _emit_read_tcp_counters(p, target, direct)
    _emit_take_counted(p, uses_storage(target, direct))
    if "bytes_sent" in counters_read(target.kernel_types):
        p.ldx(DW, R4, R10, _counter("bytes_sent"))
        p.ldx(DW, R2, R10, _counter("bytes_retrans"))
    else:
        p.ldx(DW, R4, R10, _counter("bytes_acked"))
        p.ldx(DW, R2, R10, _OUR_FIN_ACKED)
        p.ldx(W, R1, R8, ENTRY.offset("role"))
        p.jne(R1, CLIENT, "ended.no_syn")
        p.add(R2, 1)
        p.label("ended.no_syn")
    _emit_saturating_sub(p, R4, R2)
    _emit_payload(p, records, by_process, "sent_at_start", _COUNTED_SENT, _SENT, "bytes_sent", Layout.BYTES_SENT)
    p.ldx(DW, R4, R10, _counter("bytes_received"))
    p.ldx(DW, R2, R10, _PEER_FIN_IN)
    _emit_saturating_sub(p, R4, R2)
    _emit_payload(p, records, by_process, "received_at_start", _COUNTED_RECEIVED, _RECEIVED, "bytes_received",
                  Layout.BYTES_RECEIVED)
    p.ldx(DW, R4, R10, _counter("total_retrans"))
    _emit_store_in_record(p, records, W, "retransmits", R4)
    emit_add(p, R9, Layout.RETRANSMITS, R4)
    p.ldx(DW, R4, R10, _counter("srtt_us"))
    p.rsh(R4, 3)
    _emit_store_in_record(p, records, W, "srtt_us", R4)
    emit_observe(p, R9, Layout.RTT, R4)
    p.call("ktime_get_ns")
    _emit_store_in_record(p, records, DW, "end_ns", R0)
    p.ldx(DW, R1, R8, ENTRY.offset("established_ns"))
    p.mov(R4, R0)
    p.sub(R4, R1)
    _emit_store_in_record(p, records, DW, "duration_ns", R4)
    emit_observe(p, R9, Layout.DURATION, R4)
    p.ja(ended)

    _emit_failed(p, target, ended, direct)
    if by_process:
        _emit_count_by_process(p, next_step="record" if records else "forget")
    if records:
        _emit_record(p, target, direct)

    p.label("forget")  # the record falls through to here
    p.ldx(DW, R1, R10, _ADOPTED)
    p.jne(R1, 0, "forget.adopted")
    emit_forget_connection(p, _KEY, entry_in)
    p.ja("out")
    p.label("forget.adopted")
    emit_map_delete(p, ADOPTED, _COOKIE)
    p.ja("out")

    _emit_adopted(p, target, direct)
    _emit_untracked(p, target, uses_storage(target, direct))


def _emit_storage_reset(p: Program) -> None:
    """A connection established (socket in R7): COUNTED storage the socket kept from a connection before
    is zeroed (tcp_disconnect() zeroes its counters, and it may connect again). A new socket has none
    (the walk makes it), and the lookup finds that at once. Clobbers R0-R5."""
    emit_counted_get(p, R7)
    p.jeq(R0, 0, "storage.none")
    for field in COUNTED.fields:
        p.st(DW, R0, COUNTED.offset(field.name), 0)
    p.label("storage.none")


def _emit_take_counted(p: Program, storage: bool) -> None:
    """_COUNTED_SENT and _COUNTED_RECEIVED: how much of the connection's payload the row has already. With
    storage, what walks counted, swapped for ENDED at once so that no walk adds more; otherwise (or if the
    socket has none) its payload at start: 0, or an adopted connection's figures then."""
    p.ldx(DW, R1, R8, ENTRY.offset("sent_at_start"))
    p.stx(DW, R10, _COUNTED_SENT, R1)
    p.ldx(DW, R1, R8, ENTRY.offset("received_at_start"))
    p.stx(DW, R10, _COUNTED_RECEIVED, R1)
    if not storage:
        return
    emit_counted_get(p, R7)
    p.jeq(R0, 0, "counted.none")
    for field, slot in (("sent", _COUNTED_SENT), ("received", _COUNTED_RECEIVED)):
        p.mov(R1, -1)  # ENDED
        p.atomic_xchg(DW, R0, COUNTED.offset(field), R1)
        p.stx(DW, R10, slot, R1)
    p.label("counted.none")


def _emit_payload(p: Program, records: bool, by_process: bool, at_start: str, counted: int, process_slot: int,
                  record_field: str, row_slot: int) -> None:
    """The payload one way (R4, in the socket's own terms): since start into the record and the
    owner's counts, and what the row lacks of it into the row. Clobbers R1-R4."""
    p.stx(DW, R10, _ABSOLUTE, R4)
    p.ldx(DW, R2, R8, ENTRY.offset(at_start))  # 0 but for an adopted connection
    _emit_saturating_sub(p, R4, R2)
    _emit_store_in_record(p, records, DW, record_field, R4)
    if by_process:
        p.stx(DW, R10, process_slot, R4)
    p.ldx(DW, R4, R10, _ABSOLUTE)
    p.ldx(DW, R2, R10, counted)
    _emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, row_slot, R4)


def _emit_count_by_process(p: Program, next_step: str) -> None:
    """The end just counted, counted again under its owner (the entry at R8): the outcome in _OUTCOME, the
    payload in _SENT and _RECEIVED. A new owner gets a zeroed row; once the map is full, OTHER_OWNER's row
    (made by user space) takes the count. Goes on to `next_step`."""
    p.label("by_process")
    p.ldx(DW, R1, R8, ENTRY.offset("cgroup_id"))
    p.stx(DW, R10, _OWNER + OWNER.offset("cgroup_id"), R1)
    for offset in (0, 8):
        p.ldx(DW, R1, R8, ENTRY.offset("comm") + offset)
        p.stx(DW, R10, _OWNER + OWNER.offset("comm") + offset, R1)
    _emit_owner_lookup(p, "by_process.count")
    for offset in range(0, BY_PROCESS_COUNTS.sizeof(), 8):
        p.st(DW, R10, _NEW_ROW + offset, 0)
    # Full (E2BIG), or made by another CPU first (EEXIST): look again either way.
    emit_map_update(p, BY_PROCESS, _OWNER, _NEW_ROW, UpdateFlags.NOEXIST)
    _emit_owner_lookup(p, "by_process.count")
    p.st(DW, R10, _OWNER + OWNER.offset("cgroup_id"), -1)  # the map is full: OTHER_OWNER's row
    p.st(DW, R10, _OWNER + OWNER.offset("comm"), 0)
    p.st(DW, R10, _OWNER + OWNER.offset("comm") + 8, 0)
    _emit_owner_lookup(p, "by_process.count")
    p.ja(next_step)

    p.label("by_process.count")
    p.ldx(DW, R1, R10, _OUTCOME)
    emit_add_indexed(p, R0, 0, R1, len(connection_records.OUTCOMES), 1, next_step)
    p.ldx(DW, R1, R10, _SENT)
    p.atomic_add(DW, R0, 8 * BYTES_SENT_SLOT, R1)
    p.ldx(DW, R1, R10, _RECEIVED)
    p.atomic_add(DW, R0, 8 * BYTES_RECEIVED_SLOT, R1)
    p.ja(next_step)


def _emit_owner_lookup(p: Program, found: str) -> None:
    """R0 = tcp_by_process[owner at _OWNER]; a jump to `found` if there is one. Clobbers R0-R5."""
    emit_map_lookup(p, BY_PROCESS, _OWNER)
    p.jne(R0, 0, found)


def _emit_adopted(p: Program, target: BuildTarget, direct: bool) -> None:
    """CLOSE without an entry by address: a connection adopted at start (by its cookie) ends as any other."""
    p.label("adopted")
    p.ldx(DW, R1, R10, _OLDSTATE)
    p.jeq32(R1, SYN_SENT, "untracked")  # an open in progress at start was never adopted
    emit_lookup_adopted(p, R7, target.kernel_types.field("sock_common.skc_cookie.counter"), _COOKIE, _READ_SCRATCH,
                        direct, "untracked")
    p.st(DW, R10, _ADOPTED, 1)
    p.ja("close.entry")


def _emit_untracked(p: Program, target: BuildTarget, storage: bool) -> None:
    """CLOSE without an entry: counted as untracked when it ends a connection or an open (a
    listener's or a never-established server socket's CLOSE has no entry to miss). With the walk's
    storage its bytes are still counted exactly: what walks have not counted yet goes to the row."""
    p.label("untracked")
    p.ldx(DW, R1, R10, _OLDSTATE)
    for state in TRACKED_FROM:
        p.jeq32(R1, state, "untracked.count")
    p.ja("out")
    p.label("untracked.count")
    emit_row_pointer(p, STATS, R9, _ROW_KEY, "out")
    emit_add(p, R9, Layout.UNTRACKED, 1)
    if storage:
        _emit_untracked_bytes(p, target)
    p.ja("out")


def _emit_untracked_bytes(p: Program, target: BuildTarget) -> None:
    """The payload of an untracked end (socket in R7, a BTF pointer; row in R9) that walks have not
    counted: its storage swapped for ENDED, the rest added. Its FIN is in as at any end: from
    CLOSE_WAIT, LAST_ACK or CLOSING, and from FIN_WAIT2 once SOCK_DONE says it came."""
    types = target.kernel_types
    emit_counted_get(p, R7)
    p.jeq(R0, 0, "out")  # never walked: there is nothing of it in the row, nor anything to go by
    for field, slot in (("sent", _COUNTED_SENT), ("received", _COUNTED_RECEIVED)):
        p.mov(R1, -1)  # ENDED
        p.atomic_xchg(DW, R0, COUNTED.offset(field), R1)
        p.stx(DW, R10, slot, R1)
    p.st(DW, R10, _PEER_FIN_IN, 0)
    p.ldx(DW, R2, R10, _OLDSTATE)
    for state in PEER_FIN_IN:
        p.jeq32(R2, state, "untracked.fin")
    p.jne32(R2, FIN_WAIT2, "untracked.counted")
    emit_read_field(p, R1, R7, types.field("sock_common.skc_flags"), _READ_SCRATCH, direct=True)
    p.rsh(R1, SOCK_DONE)
    p.and_(R1, 1)
    p.stx(DW, R10, _PEER_FIN_IN, R1)
    p.ja("untracked.counted")
    p.label("untracked.fin")
    p.st(DW, R10, _PEER_FIN_IN, 1)
    p.label("untracked.counted")
    p.mov(R1, R7)
    p.call("skc_to_tcp_sock")
    p.jeq(R0, 0, "out")
    p.ldx(DW, R4, R0, types.field("tcp_sock.bytes_sent").offset)
    p.ldx(DW, R2, R0, types.field("tcp_sock.bytes_retrans").offset)
    _emit_saturating_sub(p, R4, R2)
    p.ldx(DW, R2, R10, _COUNTED_SENT)
    _emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, Layout.BYTES_SENT, R4)
    p.ldx(DW, R4, R0, types.field("tcp_sock.bytes_received").offset)
    p.ldx(DW, R2, R10, _PEER_FIN_IN)
    _emit_saturating_sub(p, R4, R2)
    p.ldx(DW, R2, R10, _COUNTED_RECEIVED)
    _emit_saturating_sub(p, R4, R2)
    emit_add(p, R9, Layout.BYTES_RECEIVED, R4)


def _emit_store_in_record(p: Program, records: bool, size, field: str, value) -> None:
    if records:
        p.stx(size, R10, _record(field), value)


def _emit_read_tcp_counters(p: Program, target: BuildTarget, direct: bool) -> None:
    """The TCP_COUNTERS of the socket in R7, each into its u64 stack slot. Clobbers R0-R5.

    The verifier types R7 as a struct sock, too small for tcp_sock's fields: with
    direct loads, bpf_skc_to_tcp_sock (5.9+) gives the same address typed as a
    tcp_sock, for one cheap call instead of a read per field.
    """
    fields = [(_counter(name), target.kernel_types.field(f"tcp_sock.{name}"))
              for name in counters_read(target.kernel_types)]
    if direct:
        p.mov(R1, R7)
        p.call("skc_to_tcp_sock")
        p.jeq(R0, 0, "counters.read")  # not a full TCP socket (never at an end): read as elsewhere
        for slot, field in fields:
            emit_read_field(p, R1, R0, field, _READ_SCRATCH, direct=True)
            p.stx(DW, R10, slot, R1)
        p.ja("counters.done")
        p.label("counters.read")
    for slot, field in fields:
        emit_read_field(p, R1, R7, field, _READ_SCRATCH)
        p.stx(DW, R10, slot, R1)
    p.label("counters.done")


def _emit_record(p: Program, target: BuildTarget, direct: bool) -> None:
    """The record of the end just counted: what the entry knows, the addresses, and out it goes."""
    p.label("record")
    p.ldx(W, R1, R8, ENTRY.offset("role"))
    p.stx(B, R10, _record("role"), R1)
    # The local port as ESTABLISHED saw it: by CLOSE the kernel has released it (skc_num is 0),
    # and a failed open never had one for sure. The remote port stays on the socket.
    p.ldx(H, R1, R8, ENTRY.offset("local_port"))
    p.stx(H, R10, _record("local_port"), R1)
    types = target.kernel_types
    emit_read_field(p, R1, R7, types.field("sock_common.skc_dport"), _READ_SCRATCH, direct)
    p.stx(H, R10, _record("remote_port"), R1)
    emit_copy_process(p, R8, ENTRY, _RECORD, RECORD)
    p.ldx(DW, R1, R10, _ADOPTED)
    p.stx(B, R10, _record("preexisting"), R1)
    emit_read_addresses(p, R7, types, _RECORD, _READ_SCRATCH, direct)
    target.records.emit_output(p, R6, _RECORD, RECORD.size)


def _emit_closing(p: Program, entry_in) -> None:
    """FIN_WAIT1 or LAST_ACK: close() or shutdown(), in the owner's context; a server's owner is known now."""
    p.label("closing")
    emit_lookup_connection(p, _KEY, "out", entry_in)
    p.mov(R8, R0)
    p.ldx(W, R1, R8, ENTRY.offset("pid"))
    p.jne(R1, 0, "out")
    emit_capture_process(p, R8, ENTRY)
    p.ja("out")


def _emit_saturating_sub(p: Program, value, amount) -> None:
    """value -= amount, but never below 0 (clobbers `amount`)."""
    done = f"sub.{len(p)}"
    p.jge(value, amount, done)
    p.mov(amount, value)
    p.label(done)
    p.sub(value, amount)


def _emit_failed(p: Program, target: BuildTarget, ended: str, direct: bool) -> None:
    """SYN_SENT -> CLOSE: counted by sk->sk_err, a named reason or the errno itself."""
    p.label("failed")
    if target.records is not None:
        p.call("ktime_get_ns")
        p.stx(DW, R10, _record("end_ns"), R0)
        p.ldx(DW, R1, R8, ENTRY.offset("syn_sent_ns"))
        p.sub(R0, R1)
        p.stx(DW, R10, _record("duration_ns"), R0)
        p.st(B, R10, _record("outcome"), connection_records.FAILED)
    if target.by_process:
        p.st(DW, R10, _OUTCOME, connection_records.FAILED)
        p.st(DW, R10, _SENT, 0)
        p.st(DW, R10, _RECEIVED, 0)
    emit_read_field(p, R4, R7, target.kernel_types.field("sock.sk_err"), _READ_SCRATCH, direct)
    if target.records is not None:
        p.stx(H, R10, _record("reason"), R4)
    for index, (reason, number) in enumerate(FAILURE_ERRNOS.items()):
        p.jne32(R4, number, f"failed.not_{reason}")
        emit_add(p, R9, Layout.FAILED + index, 1)
        p.ja(ended)
        p.label(f"failed.not_{reason}")
    p.stx(W, R10, _ERRNO_KEY, R4)
    emit_map_lookup(p, FAILED_ERRNOS, _ERRNO_KEY)
    p.jne(R0, 0, "failed.count")
    p.st(DW, R10, _ONE, 1)
    emit_map_update(p, FAILED_ERRNOS, _ERRNO_KEY, _ONE, UpdateFlags.NOEXIST)
    p.jeq(R0, 0, ended)
    emit_map_lookup(p, FAILED_ERRNOS, _ERRNO_KEY)  # another CPU inserted it first: add to its count
    p.jeq(R0, 0, ended)
    p.label("failed.count")
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.ja(ended)


def by_process_capacity(max_series: int) -> int:
    """Owners the by-process map keeps for `labels.max_series` label sets, OTHER_OWNER's row included."""
    return OWNERS_PER_SERIES * max_series + 1


def by_process_map(capacity: int = by_process_capacity(100)) -> HashMap:
    """(cgroup id, comm) -> ends by outcome and payload bytes; OTHER_OWNER's row is made here, first."""
    counts = HashMap(RecordCodec(OWNER), BY_PROCESS_COUNTS, capacity, name="gsp_tcp_owners")
    counts[OTHER_OWNER] = (0,) * 5
    return counts


def failed_errnos_map() -> HashMap:
    """errno -> failed connects, for errnos without a reason of their own (few in practice)."""
    return HashMap(U32, U64, 64, name="gsp_tcp_errnos")


RESETS = counter("connections_reset_total", ("direction",), "TCP connections ended by a reset, by who sent it.",
                 dogstatsd="connections.reset")
FAILURES = counter("connections_failed_total", ("reason",), "TCP active opens that never reached ESTABLISHED.",
                   dogstatsd="connections.failed")
RETRANSMITS = counter("retransmits_total", (), "TCP segments retransmitted.", dogstatsd="tcp.retransmits")
RTT = histogram("rtt_seconds", (), "Smoothed TCP round-trip time of each connection, observed when it ends.",
                dogstatsd="tcp.rtt_seconds")
CONNECT_LATENCY = histogram("connect_latency_seconds", (), "Time from SYN sent to ESTABLISHED for each TCP active open.",
                            dogstatsd="tcp.connect_latency_seconds")
ENDS_UNTRACKED = counter(
    "connection_ends_untracked_total", ("protocol",),
    "TCP connection ends seen without gespann's entry for the connection, so not counted as closed or reset: "
    "evicted from a full connection map (config limits.tcp_connections), or open before gespann started and not "
    "adopted (the adopted map, as large, was full).", dogstatsd="connections.untracked")


def read_figures(context: ReadContext) -> Reader:
    """This probe's reader, in its own module (tcp_metrics.py), which reads this one's constants."""
    from .tcp_metrics import TcpMetrics

    return TcpMetrics.from_context(context)


PROBE = Probe(
    name="tcp_lifecycle",
    summary="TCP connections opened, ended (close, reset) and failed, with bytes, RTT and timings",
    flavours=socket_state.FLAVOURS,
    body=body,
    derived=socket_state.DERIVED,
    maps={STATS: stats_map, FAILED_ERRNOS: failed_errnos_map, BY_PROCESS: by_process_map,
          COUNTED_MAP: counted_map},
    shared_maps={MAP_NAME: connections_map, ENTRIES: entries_map, ADOPTED: adopted_map},
    optional_maps={BY_PROCESS: lambda target: target.by_process, COUNTED_MAP: lambda target: target.kernel_walk,
                   **CONNECTION_MAPS_WANTED},
    metrics=(*SHARED, RESETS, FAILURES, RETRANSMITS, RTT, CONNECT_LATENCY, ENDS_UNTRACKED),
    reader=read_figures,
)
