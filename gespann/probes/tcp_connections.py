"""The TCP connections gespann is following: a bounded LRU hash keyed by the socket's address.

An entry is made when an active open starts (SYN_SENT) or a passive one
completes, and deleted when the socket enters CLOSE, so the map holds about as
many entries as there are connections in flight. It is LRU so that an entry
whose end was never seen (the probe attached mid-way) cannot fill it for good.

The map is shared: tcp_lifecycle owns the entries, tcp_resets only marks an
entry with the direction of a reset seen before its end. The collector reads
the ports and role of open connections, to correct for the SYN in a client's
`bytes_acked` (before 4.19).

Connections open before gespann started have no entry by socket address: user
space adopts them at start into a second map, keyed by the socket's cookie
(which its sock_diag dump has just given each of them), with what they had
moved by then. tcp_lifecycle falls back to it when an end finds no entry, so
each of them ends once, with the bytes it moved since gespann started.
"""

from __future__ import annotations

from asm import DW, R0, R1, R10, Program, Record, Register, array, u8, u16, u32, u64

from ..bpf.maps import U64, HashMap, LruHashMap
from .kernel_memory import emit_read_field
from .map_calls import emit_map_lookup
from .record_codec import RecordCodec

#: Most connections followed at once by default (config limits.tcp_connections); beyond that the
#: least recently updated entry is evicted.
CAPACITY = 65536

CLIENT, SERVER = 0, 1  # indices into tcp_stats.ROLES
NO_RESET, RESET_SENT, RESET_RECEIVED = 0, 1, 2  # RESET_x - 1 indexes tcp_stats.RESET_DIRECTIONS

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
])

MAP_NAME = "tcp_connections"
ADOPTED = "tcp_adopted"
#: BPF_F_NO_PREALLOC: the adopted map takes kernel memory only for the connections adopted.
NO_PREALLOC = 1


ENTRY_CODEC = RecordCodec(ENTRY)


def connections_map(capacity: int = CAPACITY) -> LruHashMap:
    return LruHashMap(U64, ENTRY_CODEC, capacity, name="gsp_tcp_conns")


def adopted_map(capacity: int = CAPACITY) -> HashMap:
    """Socket cookie -> entry of a connection open before gespann started (as many as the connection map)."""
    return HashMap(U64, ENTRY_CODEC, capacity, flags=NO_PREALLOC, name="gsp_tcp_adopted")



def emit_lookup_adopted(p: Program, sk: Register, cookie_field, cookie_slot: int, scratch_slot: int,
                        direct: bool, missing: str) -> None:
    """Emit `R0 = adopted[sk's cookie]`, the cookie kept at R10 + `cookie_slot`, or a jump to `missing`
    (no cookie: a socket no dump ever asked about). Clobbers R0-R5."""
    emit_read_field(p, R1, sk, cookie_field, scratch_slot, direct)
    p.jeq(R1, 0, missing)
    p.stx(DW, R10, cookie_slot, R1)
    emit_map_lookup(p, ADOPTED, cookie_slot)
    p.jeq(R0, 0, missing)


def emit_lookup_connection(p: Program, key_slot: int, missing: str) -> None:
    """Emit `R0 = connections[sk]` for the sk stored at R10 + `key_slot`, or a jump to `missing`.

    Clobbers R0-R5.
    """
    emit_map_lookup(p, MAP_NAME, key_slot)
    p.jeq(R0, 0, missing)
