"""The TCP connections gespann is following: a bounded LRU hash keyed by the socket's address.

An entry is made when an active open starts (SYN_SENT) or a passive one
completes, and deleted when the socket enters CLOSE, so the map holds about as
many entries as there are connections in flight. It is LRU so that an entry
whose end was never seen (the probe attached mid-way) cannot fill it for good.

The map is shared: tcp_lifecycle owns the entries, tcp_resets only marks an
entry with the direction of a reset seen before its end. The collector reads
the ports and role of open connections, to correct for the SYN in a client's
`bytes_acked` (before 4.19).

Where the kernel has socket storage for tracing programs (the condition of the
kernel walk, tcp_walk.py) and the probes see sockets as BTF pointers, nothing
is evicted: the map is a plain hash, and an entry it has no room for goes to
the socket's own storage instead (`ENTRIES`), which dies with the socket. So no
end goes untracked however many connections are in flight, and the hot path
pays for storage (an allocation per socket) only past `limits.tcp_connections`.
The emitters below take the socket's register for that case (`storage_sk`).

Connections open before gespann started have no entry by socket address: user
space adopts them at start into a second map, keyed by the socket's cookie
(which its sock_diag dump has just given each of them), with what they had
moved by then. tcp_lifecycle falls back to it when an end finds no entry, so
each of them ends once, with the bytes it moved since gespann started.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Optional

from asm import DW, R0, R1, R2, R10, Program, Record, Register, Slot, array, u8, u16, u32, u64

from ...bpf.maps import U64, HashMap, LruHashMap, SocketStorageMap
from ...bpf.syscall import UpdateFlags
from ...vocabulary import CLIENT, SERVER  # noqa: F401 - a connection entry's role
from ..toolkit.kernel_memory import emit_read_field
from ..toolkit.map_calls import emit_map_delete, emit_map_lookup, emit_map_update
from ..toolkit.record_codec import RecordCodec
from ..toolkit.socket_storage import CREATE, emit_storage_get, storage_map

#: Most connections followed at once by default (config limits.tcp_connections); beyond that the
#: least recently updated entry is evicted.
CAPACITY = 65536

NO_RESET, RESET_SENT, RESET_RECEIVED = 0, 1, 2  # RESET_x - 1 indexes vocabulary.RESET_DIRECTIONS

ENTRY = Record("tcp_connection", [
    ("syn_sent_ns", u64),  # ktime of SYN_SENT for an active open, 0 otherwise
    ("established_ns", u64),  # ktime of ESTABLISHED, 0 before
    ("cgroup_id", u64),  # of the process below; filled only when records are asked for
    ("role", u32),  # CLIENT or SERVER
    ("reset", u32),  # NO_RESET, RESET_SENT or RESET_RECEIVED: the first reset seen
    ("pid", u32),  # the process that opened (client) or first closed (server) it; 0 until known
    ("local_port", u16),  # host order
    ("remote_port", u16),  # network order, as the socket keeps it
    ("comm", array(u8, 16)),
    # Only for an adopted connection (0 otherwise): its payload when gespann started, taken off at its end.
    ("sent_at_start", u64),
    ("received_at_start", u64),
    # Packets of the connection the kernel dropped (counted where dropped packets are), and the reason of the latest.
    ("drops", u32),
    ("drop_reason", u32),
])

MAP_NAME = "tcp_connections"
ENTRIES = "tcp_entries"
ADOPTED = "tcp_adopted"
#: BPF_F_NO_PREALLOC: the adopted map takes kernel memory only for the connections adopted.
NO_PREALLOC = 1


ENTRY_CODEC = RecordCodec(ENTRY)


def connections_map(capacity: int = CAPACITY, target=None) -> HashMap:
    """LRU, unless entries overflow into socket storage (target.kernel_walk): then nothing may be evicted."""
    if target is not None and target.kernel_walk:
        return HashMap(U64, ENTRY_CODEC, capacity, name="gsp_tcp_conns")
    return LruHashMap(U64, ENTRY_CODEC, capacity, name="gsp_tcp_conns")


#: Socket storage for the entries the map has no room for, where the kernel walk runs (every probe sharing
#: entries then sees BTF-typed sockets: ProbeSet.attach sees to it).
CONNECTION_MAPS_WANTED = {ENTRIES: lambda target: target.kernel_walk}


def entries_map() -> SocketStorageMap:
    """Each followed connection's entry in its socket's storage (see the module docstring)."""
    return storage_map(ENTRY, "gsp_tcp_entries")


def adopted_map(capacity: int = CAPACITY) -> HashMap:
    """Socket cookie -> entry of a connection open before gespann started (as many as the connection map)."""
    return HashMap(U64, ENTRY_CODEC, capacity, flags=NO_PREALLOC, name="gsp_tcp_adopted")


def emit_lookup_adopted(p: Program, sk: Register, cookie_field, cookie: Slot, scratch: Slot,
                        direct: bool, missing: str) -> None:
    """Emit `R0 = adopted[sk's cookie]`, the cookie kept in stack slot `cookie`, or a jump to `missing`
    (no cookie: a socket no dump ever asked about). Clobbers R0-R5."""
    emit_read_field(p, R1, sk, cookie_field, scratch, direct)
    p.jeq(R1, 0, missing)
    p.stx(DW, R10, cookie.at(), R1)
    emit_map_lookup(p, ADOPTED, cookie)
    p.jeq(R0, 0, missing)


def emit_lookup_connection(p: Program, key: Slot, missing: str, storage_sk: Optional[Register] = None) -> None:
    """Emit `R0 = connections[sk]` for the sk stored in stack slot `key` (or its storage, the socket in
    `storage_sk`), or a jump to `missing`. Clobbers R0-R5.
    """
    emit_map_lookup(p, MAP_NAME, key)
    if storage_sk is None:
        p.jeq(R0, 0, missing)
        return
    found = p.new_label("lookup_connection.found")
    p.jne(R0, 0, found)
    emit_storage_get(p, ENTRIES, storage_sk)
    p.jeq(R0, 0, missing)
    p.ldx(DW, R1, R0, ENTRY.offset("syn_sent_ns"))
    p.ldx(DW, R2, R0, ENTRY.offset("established_ns"))
    p.or_(R1, R2)
    p.jeq(R1, 0, missing)  # emptied by the end of a connection before
    p.label(found)


def emit_store_connection(p: Program, key: Slot, entry: Slot, storage_sk: Optional[Register] = None,
                          on_stale: Optional[Callable[[Program], None]] = None) -> None:
    """Emit `connections[sk] = the ENTRY in stack slot `entry``; with `storage_sk`, an entry the map has no
    room for goes into that socket's storage (made if need be; without memory for it the connection goes
    unfollowed, and its end untracked). Clobbers R0-R5.

    With `on_stale` (a new connection: no entry at its address can be its own), an entry already there
    belongs to an earlier socket at the same address whose end no program saw, neither at CLOSE nor at
    its free: `on_stale(p)` is emitted with R0 pointing to it, before it is overwritten. The insert asks
    for a new key (BPF_NOEXIST), so the usual case costs nothing more."""
    if on_stale is None:
        emit_map_update(p, MAP_NAME, key, entry, UpdateFlags.ANY)
    else:
        stored, overwrite = p.new_label("store_connection.stored"), p.new_label("store_connection.overwrite")
        emit_map_update(p, MAP_NAME, key, entry, UpdateFlags.NOEXIST)
        p.jne32(R0, -errno.EEXIST, stored)  # stored, or the map is full: as below
        emit_map_lookup(p, MAP_NAME, key)
        p.jeq(R0, 0, overwrite)  # gone meanwhile
        on_stale(p)
        p.label(overwrite)
        emit_map_update(p, MAP_NAME, key, entry, UpdateFlags.ANY)
        p.label(stored)
    if storage_sk is None:
        return
    done = p.new_label("store_connection.done")
    p.jeq32(R0, 0, done)  # in the map; otherwise it is full (E2BIG)
    emit_storage_get(p, ENTRIES, storage_sk, CREATE)
    p.jeq(R0, 0, done)
    for offset, word in enumerate(entry.words()):
        p.ldx(DW, R1, R10, word)
        p.stx(DW, R0, 8 * offset, R1)
    p.label(done)


def emit_forget_connection(p: Program, key: Slot, entry: Register) -> None:
    """Emit the removal of the connection's entry, `entry` as its lookup gave it. Clobbers R0-R5.

    Its times are zeroed first (no connection): an entry in socket storage is so emptied rather than freed
    (freeing costs far more than the stores, the socket frees it anyway, and one that connects again
    overwrites it), and one the map fails to delete reads as ended, so tcp_unseen_ends never counts it."""
    p.st(DW, entry, ENTRY.offset("syn_sent_ns"), 0)
    p.st(DW, entry, ENTRY.offset("established_ns"), 0)
    emit_map_delete(p, MAP_NAME, key)
