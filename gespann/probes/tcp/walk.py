"""The kernel walk of open TCP connections: what they moved so far, counted once, at any number of them.

tcp_lifecycle counts a connection's bytes in its per-CPU row when the
connection ends. A connection open for hours must show its bytes sooner, and
reading every open socket from user space costs tens of microseconds each. So a
collection runs this walk instead: an iterator over the TCP sockets of the
watched network namespace (iter/tcp, 5.9+), which for each open connection
adds to the same row what it moved since it was last counted, and counts the
open and the idle ones. User space reads a handful of numbers.

Counted once, without a lock. Each socket the walk has seen carries
socket-local storage (`COUNTED`, BPF_MAP_TYPE_SK_STORAGE, 5.11+ from tracing
programs): how much of its payload is in the row already. The walk makes it,
zeroed, the first time it finds the connection open with payload moved (so a
connection that ends between two walks, or moves nothing, costs the hot path
nothing but a failed lookup), and
tcp_lifecycle, at the end, swaps each figure for `ENDED` (atomically) and adds
what is left; without storage, the end adds the whole payload. The walk moves a figure forward only by
compare-and-swap from the value it read: if the end came first, the swap fails
and the walk adds nothing. So every byte is added once, by a walk or by the
end, and the row never goes down: no figure is held at a maximum in user space.
The storage dies with its socket, so it can neither be evicted nor leak.

Payload means what tcp_lifecycle's end counts: sent is `bytes_sent` less
`bytes_retrans`, received is `bytes_received` less the peer's FIN. Each pair is
read in the order that can only under-read (sent before retransmitted, bytes
before the state that says a FIN came), so a figure counted is never more than
the end finds.

Adoption. The walk made at start-up, with `adopt` set, finds connections open
before gespann: those without an entry (tcp_connections.ENTRIES). It makes their
storage holding what they had moved then, adds nothing, and writes the same
figures into their adopted entry (by cookie), so a pre-existing connection's
record and the row both count from that moment.

Idle. A connection is idle when no payload went either way for longer than
the threshold, as tcp_info tells it (`lsndtime`, `icsk_ack.lrcvtime`, in
jiffies). The threshold comes in jiffies, so user space needs the kernel's HZ:
each walk's last call writes `bpf_jiffies64` and `bpf_ktime_get_ns` (see
probes/tcp_metrics.py).
"""

from __future__ import annotations

import functools
import threading
from typing import Mapping, NamedTuple, Optional

from asm import DW, R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, B, Frame, H, Program, Record, Register, Slot, W, u64

from ...bpf.errors import BPFError, PermissionDeniedError
from ...bpf.fd import Closable
from ...bpf.links import IteratorLink, attach_iterator
from ...bpf.maps import U64, ArrayMap, HashMap, Map, SocketStorageMap
from ...bpf.programs import LoadedProgram, load_program
from ...bpf.syscall import AttachType, ProgType
from ...btf import KernelTypes
from ...vocabulary import CLIENT
from ..toolkit.map_calls import emit_map_delete, emit_map_lookup
from ..toolkit.netns import in_namespace
from ..toolkit.probe import CheckContext, CheckLine, KernelWalk, walk_not_taken
from ..toolkit.record_codec import RecordCodec
from ..toolkit.socket_state import OPEN_STATES, PEER_FIN_IN
from ..toolkit.socket_storage import CREATE, emit_storage_get, storage_map
from .connections import ADOPTED, ENTRIES, ENTRY, emit_lookup_connection, entries_map
from .connections import MAP_NAME as CONNECTIONS
from .peers import PEERS, PeerSlots, emit_peer_count, emit_peer_key, emit_peer_other
from .totals import Totals, emit_saturating_sub

#: Socket storage: payload of the connection already in tcp_lifecycle's row, in the socket's own terms.
COUNTED = Record("tcp_counted", [("sent", u64), ("received", u64)])
COUNTED_MAP = "tcp_counted"
#: What an end leaves in COUNTED: nothing more may be added by a walk.
ENDED = (1 << 64) - 1

#: The walk's inputs (set by user space before each pass) and outputs (zeroed with them).
WALK = Record("tcp_walk", [
    ("adopt", u64),  # 1: the start-up walk (see the module docstring)
    ("idle_after_jiffies", u64),  # a connection idle for longer than this counts as idle
    ("open", u64),
    ("idle", u64),
    ("jiffies", u64),  # bpf_jiffies64 and bpf_ktime_get_ns at the walk's end
    ("ktime_ns", u64),
    ("started_jiffies", u64),  # bpf_jiffies64 at the walk's first call
    # Input: the last walk's start. A connection that moved no payload since (by its lsndtime and
    # lrcvtime, older) was counted in full then: it is passed over. 0: none is.
    ("unchanged_before", u64),
])
WALK_MAP = "tcp_walk"

ITERATOR = "bpf_iter_tcp"
#: tcp_lifecycle's flavours whose sockets are BTF pointers, as bpf_sk_storage_get takes them.
STORAGE_FLAVOURS = ("tp_btf", "fentry")


class _Slots(NamedTuple):
    """The walk's stack slots."""

    key: Slot  # the walk map's and the row's key (0)
    cookie: Slot
    delta_sent: Slot  # what this walk adds to the row
    delta_received: Slot
    sent: Slot  # the connection's payload now
    received: Slot
    socket: Slot  # the socket's address: the connection map's key

    @classmethod
    def of(cls, frame: Frame) -> _Slots:
        return cls(*(frame.alloc(name, size=8) for name in cls._fields))


def counted_map() -> SocketStorageMap:
    return storage_map(COUNTED, "gsp_tcp_counted")


def walk_map() -> ArrayMap:
    return ArrayMap(RecordCodec(WALK), 1, name="gsp_tcp_walk")


def program(types: KernelTypes, stats: str, peers: bool = False, networks: bool = False) -> Program:
    """The iter/tcp program: `stats` names tcp_lifecycle's per-CPU row; with `peers`, what it adds goes to
    each connection's peer row too (peers.py), its remote address looked up in named networks if `networks`."""
    p = Program("gsp_tcp_walk")
    s = _Slots.of(p.frame)
    peer = PeerSlots(p.frame) if peers else None
    out, last = p.new_label("out"), p.new_label("last")
    p.ldx(DW, R7, R1, 8)  # struct bpf_iter__tcp: meta, then sk_common (NULL on the last call)
    _emit_walk_row(p, s, out)
    p.jeq(R7, 0, last)
    state = types.field("sock_common.skc_state").offset
    _emit_open_connection(p, types, state, out)
    _emit_idle(p, types, out)
    _emit_payload(p, types, state, s)
    _emit_count(p, types, stats, s, out)
    if peer is not None:
        _emit_count_by_peer(p, types, s, peer, out, networks)
    p.ja(out)

    p.label(last)
    p.call("jiffies64")
    p.stx(DW, R9, WALK.offset("jiffies"), R0)
    p.call("ktime_get_ns")
    p.stx(DW, R9, WALK.offset("ktime_ns"), R0)

    p.label(out)
    p.mov(R0, 0)
    p.exit()
    return p


def _emit_walk_row(p: Program, s: _Slots, missing: str) -> None:
    """R9 = the walk map's row, its start noted at the walk's first call. Clobbers R0-R5."""
    started = p.new_label("started")
    p.st(W, R10, s.key.at(), 0)
    emit_map_lookup(p, WALK_MAP, s.key)
    p.jeq(R0, 0, missing)
    p.mov(R9, R0)
    p.ldx(DW, R1, R9, WALK.offset("started_jiffies"))
    p.jne(R1, 0, started)
    p.call("jiffies64")
    p.stx(DW, R9, WALK.offset("started_jiffies"), R0)
    p.label(started)


def _emit_open_connection(p: Program, types: KernelTypes, state: int, skip: str) -> None:
    """R8 = the tcp_sock of the sock_common in R7 when it is an open connection, counted open in the row
    (R9); a jump to `skip` otherwise."""
    open_ = p.new_label("open")
    p.ldx(B, R1, R7, state)
    for open_state in OPEN_STATES:
        p.jeq(R1, open_state, open_)
    p.ja(skip)

    p.label(open_)
    p.mov(R1, R7)
    p.call("skc_to_tcp_sock")
    p.jeq(R0, 0, skip)  # a request or timewait socket: no connection of its own
    p.mov(R8, R0)
    p.mov(R1, 1)
    p.atomic_add(DW, R9, WALK.offset("open"), R1)


def _emit_count(p: Program, types: KernelTypes, stats: str, s: _Slots, done: str) -> None:
    """Move the connection's COUNTED storage to its payload (s.sent, s.received), adding the difference to
    the row; storage made first if it has none (at the start-up walk, an open connection's is adopted)."""
    counted, create, adopt, followed = (p.new_label(name) for name in ("counted", "create", "adopt", "followed"))
    p.st(DW, R10, s.delta_sent.at(), 0)
    p.st(DW, R10, s.delta_received.at(), 0)
    emit_counted_get(p, R8)
    p.jne(R0, 0, counted)
    p.ldx(DW, R1, R9, WALK.offset("adopt"))
    p.jeq(R1, 0, create)
    p.stx(DW, R10, s.socket.at(), R7)  # followed since the start (it has an entry), or open before it?
    emit_lookup_connection(p, s.socket, adopt, storage_sk=R8)
    p.ja(followed)
    p.label(adopt)
    emit_counted_get(p, R8, CREATE)
    p.jeq(R0, 0, done)  # no memory for it: its end counts it (since the start)
    p.mov(R6, R0)
    _emit_adopt(p, types, s, done)
    p.ja(done)

    p.label(followed)  # if user space adopted it too (it cannot see entries in storage), undo that
    p.ldx(DW, R1, R7, types.field("sock_common.skc_cookie.counter").offset)
    p.stx(DW, R10, s.cookie.at(), R1)
    emit_map_delete(p, ADOPTED, s.cookie)

    p.label(create)  # first walked: nothing of it is in the row yet
    _emit_skip_if_no_payload(p, s, done)  # nothing to count: no storage until there is (its end counts it)
    emit_counted_get(p, R8, CREATE)
    p.jeq(R0, 0, done)  # no memory for it: its end counts it whole

    p.label(counted)
    p.mov(R6, R0)
    _emit_advance(p, "sent", s.sent, s.delta_sent)
    _emit_advance(p, "received", s.received, s.delta_received)
    p.st(W, R10, s.key.at(), 0)
    emit_map_lookup(p, stats, s.key)
    p.jeq(R0, 0, done)
    p.ldx(DW, R1, R10, s.delta_sent.at())
    p.atomic_add(DW, R0, 8 * Totals.BYTES_SENT, R1)
    p.ldx(DW, R1, R10, s.delta_received.at())
    p.atomic_add(DW, R0, 8 * Totals.BYTES_RECEIVED, R1)


def _emit_count_by_peer(p: Program, types: KernelTypes, s: _Slots, peer: PeerSlots, done: str,
                        networks: bool) -> None:
    """What _emit_count added to the row, added to the connection's peer row too: its entry gives the role
    and local port (one without an entry, ending as the walk runs, counts in the clients' OTHER row, as its
    end will)."""
    other, key = p.new_label("walk.peer_other"), p.new_label("walk.peer_key")
    p.ldx(DW, R1, R10, s.delta_sent.at())
    p.ldx(DW, R2, R10, s.delta_received.at())
    p.or_(R1, R2)
    p.jeq(R1, 0, done)
    peer.clear(p)
    for field, slot in (("sent", s.delta_sent), ("received", s.delta_received)):
        p.ldx(DW, R1, R10, slot.at())
        p.stx(DW, R10, getattr(peer, field).at(), R1)
    p.stx(DW, R10, s.socket.at(), R7)
    emit_lookup_connection(p, s.socket, other, storage_sk=R8)
    p.ldx(W, R1, R0, ENTRY.offset("role"))
    p.ldx(H, R2, R0, ENTRY.offset("local_port"))
    emit_peer_key(p, peer, R8, types, direct=True, networks=networks)
    p.ja(key)
    p.label(other)
    emit_peer_other(p, peer, CLIENT)
    p.label(key)
    emit_peer_count(p, peer, done)


def _emit_skip_if_no_payload(p: Program, s: _Slots, skip: str) -> None:
    """A jump to `skip` when the connection moved no payload either way (s.sent, s.received): making its
    storage would cost about a microsecond and its memory, to count nothing."""
    moved = p.new_label("moved")
    p.ldx(DW, R1, R10, s.sent.at())
    p.jne(R1, 0, moved)
    p.ldx(DW, R1, R10, s.received.at())
    p.jeq(R1, 0, skip)
    p.label(moved)


def _emit_idle(p: Program, types: KernelTypes, skip: str) -> None:
    """Count the connection (tcp_sock in R8) idle when neither way moved payload for longer than the
    threshold: tcp_info's min(last_data_sent, last_data_recv), in jiffies (u32 arithmetic, as the kernel's).
    Then pass it over (a jump to `skip`) if it moved none since the last walk began: lsndtime moves with
    every data segment sent (retransmissions too, which leave the payload as it was), lrcvtime with every
    one received in order, which is when bytes_received moves; both are set when a connection is
    established."""
    counted_idle, changed = p.new_label("idle.done"), p.new_label("changed")
    p.call("jiffies64")
    p.ldx(W, R1, R8, types.field("tcp_sock.lsndtime").offset)
    p.mov32(R2, R0)
    p.sub32(R2, R1)
    p.ldx(W, R1, R8, types.field("inet_connection_sock.icsk_ack.lrcvtime").offset)
    p.mov32(R3, R0)
    p.sub32(R3, R1)
    p.ldx(DW, R4, R9, WALK.offset("idle_after_jiffies"))
    p.jle(R2, R4, counted_idle)
    p.jle(R3, R4, counted_idle)
    p.mov(R1, 1)
    p.atomic_add(DW, R9, WALK.offset("idle"), R1)
    p.label(counted_idle)
    # Unchanged since the last walk began: its payload is all counted already (see WALK).
    p.ldx(DW, R1, R9, WALK.offset("unchanged_before"))
    p.jeq(R1, 0, changed)
    p.mov32(R4, R0)
    p.sub32(R4, R1)  # how long ago the last walk began, as the other two ages
    p.jle(R2, R4, changed)
    p.jgt(R3, R4, skip)
    p.label(changed)


def _emit_payload(p: Program, types: KernelTypes, state: int, s: _Slots) -> None:
    """s.sent and s.received: the payload of the tcp_sock in R8 (sock_common in R7), read so as to under-read."""
    fin, received = p.new_label("payload.fin"), p.new_label("payload.received")
    p.ldx(DW, R1, R8, types.field("tcp_sock.bytes_sent").offset)
    p.ldx(DW, R2, R8, types.field("tcp_sock.bytes_retrans").offset)
    emit_saturating_sub(p, R1, R2)
    p.stx(DW, R10, s.sent.at(), R1)
    p.ldx(DW, R1, R8, types.field("tcp_sock.bytes_received").offset)
    p.ldx(B, R2, R7, state)
    for fin_state in PEER_FIN_IN:
        p.jeq(R2, fin_state, fin)
    p.ja(received)
    p.label(fin)
    p.mov(R2, 1)
    emit_saturating_sub(p, R1, R2)
    p.label(received)
    p.stx(DW, R10, s.received.at(), R1)


def emit_counted_get(p: Program, sk: Register, flags: int = 0) -> None:
    """R0 = the COUNTED storage of the socket in `sk` (a BTF pointer), or NULL. Clobbers R0-R5."""
    emit_storage_get(p, COUNTED_MAP, sk, flags)


def _emit_advance(p: Program, field: str, now: Slot, delta: Slot) -> None:
    """Move COUNTED.field (storage in R6) from what it holds to the payload in slot `now`, by one
    compare-and-swap; when it succeeds, the difference goes to slot `delta`. Skipped once the end
    has taken the storage (ENDED), or if the end or another walk moved it first."""
    done, offset = p.new_label(f"advance.{field}"), COUNTED.offset(field)
    p.ldx(DW, R0, R6, offset)
    p.jeq(R0, -1, done)  # ENDED
    p.ldx(DW, R1, R10, now.at())
    p.jle(R1, R0, done)
    p.mov(R3, R0)
    p.mov(R2, R1)
    p.atomic_cmpxchg(DW, R6, offset, R2)
    p.jne(R0, R3, done)
    p.sub(R1, R3)
    p.stx(DW, R10, delta.at(), R1)
    p.label(done)


def _emit_adopt(p: Program, types: KernelTypes, s: _Slots, done: str) -> None:
    """A connection open before gespann (storage just made, in R6): what it moved so far is not counted,
    and its adopted entry, if it has one, starts from the same figures (a jump to `done` if none)."""
    for field, slot in (("sent", s.sent), ("received", s.received)):
        p.ldx(DW, R2, R10, slot.at())
        p.mov(R0, 0)
        p.atomic_cmpxchg(DW, R6, COUNTED.offset(field), R2)
    p.ldx(DW, R1, R7, types.field("sock_common.skc_cookie.counter").offset)
    p.stx(DW, R10, s.cookie.at(), R1)
    emit_map_lookup(p, ADOPTED, s.cookie)
    p.jeq(R0, 0, done)
    p.ldx(DW, R1, R10, s.sent.at())
    p.stx(DW, R0, ENTRY.offset("sent_at_start"), R1)
    p.ldx(DW, R1, R10, s.received.at())
    p.stx(DW, R0, ENTRY.offset("received_at_start"), R1)


class WalkTotals(NamedTuple):
    open: int
    idle: int
    jiffies: int
    ktime_ns: int


class TcpWalk(Closable):
    """The walk, loaded and linked over tcp_lifecycle's maps; `run()` makes one pass in `netns_path`
    (the watched namespace; None: gespann's own) and returns its totals."""

    def __init__(self, maps: Mapping[str, Map], stats: str, types: KernelTypes, networks: bool = False):
        self._lock = threading.Lock()
        self._unchanged_before = 0  # the last walk's start, in jiffies
        self._walk = walk_map()
        try:
            code = program(types, stats, peers=PEERS in maps, networks=networks)
            self._program: LoadedProgram = load_program(
                code, ProgType.TRACING, maps={**maps, WALK_MAP: self._walk},
                expected_attach_type=AttachType.TRACE_ITER, attach_btf_id=types.func(ITERATOR).btf_id)
            self._link: IteratorLink = attach_iterator(self._program)
        except BaseException:
            self._walk.close()
            raise

    def run(self, idle_after_jiffies: int, netns_path: Optional[str] = None, adopt: bool = False) -> WalkTotals:
        with self._lock:
            inputs = dict.fromkeys((field.name for field in WALK.fields), 0)
            inputs.update(adopt=int(adopt), idle_after_jiffies=min(idle_after_jiffies, (1 << 32) - 1),
                          unchanged_before=0 if adopt else self._unchanged_before)
            self._walk[0] = inputs
            in_namespace(netns_path, self._link.run)
            out = self._walk[0]
            self._unchanged_before = out.started_jiffies
        return WalkTotals(out.open, out.idle, out.jiffies, out.ktime_ns)

    def close(self) -> None:
        for resource in (self._link, self._program, self._walk):
            resource.close()


def missing_prerequisite(types_source: str = "auto") -> Optional[str]:
    """What rules the walk out without trying it (None: nothing does): BTF, the fields it reads, the
    iterator. Whether the kernel loads it is another matter (unavailable_reason)."""
    from ...btf import BTFError, kernel_has_btf, kernel_types

    if not kernel_has_btf():
        return "the kernel exposes no BTF (/sys/kernel/btf/vmlinux), which iterators need"
    try:
        types = kernel_types(types_source)
    except BTFError as err:
        return f"no kernel types: {err}"
    for key in ("tcp_sock.lsndtime", "inet_connection_sock.icsk_ack.lrcvtime", "tcp_sock.bytes_sent",
                "tcp_sock.bytes_retrans"):
        if types.optional_field(key) is None:
            return f"the kernel has no {key}"
    if types.funcs.get(ITERATOR) is None:
        return f"the kernel has no TCP iterator ({ITERATOR}, 5.9+)"
    return None


@functools.lru_cache(maxsize=None)
def unavailable_reason(types_source: str = "auto") -> Optional[str]:
    """Why this kernel cannot run the walk (None: it can): iter/tcp (5.9), socket storage from tracing
    programs (5.11) and compare-and-swap (5.12) are tried for real, on a throw-away program (for
    `gespann check`: attaching finds out by doing)."""
    from ...btf import kernel_types

    missing = missing_prerequisite(types_source)
    if missing is not None:
        return missing
    types = kernel_types(types_source)
    try:
        from .totals import stats_map

        with counted_map() as counted, stats_map() as stats, HashMap(U64, RecordCodec(ENTRY), 1) as adopted, \
                HashMap(U64, RecordCodec(ENTRY), 1) as connections, entries_map() as entries:
            TcpWalk({COUNTED_MAP: counted, "stats": stats, ADOPTED: adopted, CONNECTIONS: connections,
                     ENTRIES: entries}, "stats", types).close()
    except PermissionDeniedError as err:
        if err.missing:
            raise  # not the kernel's limit: the capability is named, as for any other program
        return f"the kernel refused the walk: {str(err).splitlines()[0]}"
    except (BPFError, KeyError, OSError) as err:
        first_line = str(err).splitlines()[0]
        return f"the kernel refused the walk (iter/tcp 5.9+, socket storage in tracing 5.11+, cmpxchg 5.12+): " \
               f"{first_line}"
    return None


def _attach(attached, target, stack) -> Optional[TcpWalk]:
    """The walk over tcp_lifecycle's maps, where they were made for it (the COUNTED storage)."""
    from .totals import STATS

    if COUNTED_MAP not in attached.maps:
        return None
    return stack.enter_context(TcpWalk(attached.maps, STATS, target.kernel_types, bool(target.networks)))


KERNEL_WALK = KernelWalk(subject="open TCP connections", fallback="sock_diag", since="5.12", attach=_attach,
                         missing_prerequisite=missing_prerequisite, shapes_build=True, typed_sockets_for=ENTRIES)


def _check(context: CheckContext) -> str:
    """The path `gespann run` takes to read open TCP connections, and why."""
    fallback = "sock_diag, a dump per collection whose cost grows with the connections open"
    not_taken = walk_not_taken(context, fallback, unavailable_reason)
    if not_taken is not None:
        return not_taken
    sharing = {probe.name for probe in context.probes if ENTRIES in probe.shared_maps}
    for trial in context.trials:
        if trial.probe in sharing and trial.flavour and not trial.flavour.startswith(STORAGE_FLAVOURS):
            return f"{fallback}: {trial.probe} attaches as {trial.flavour}, which cannot use socket storage"
    return ("kernel walk (iter/tcp over socket storage): counted in the kernel, once, at any number of "
            "connections; none evicted past limits.tcp_connections")


CHECK = CheckLine("open_connections", "open conns", _check)
