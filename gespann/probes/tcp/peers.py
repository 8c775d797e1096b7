"""TCP figures by peer, counted in the kernel as each event happens: opt-in labels (labels.peers).

Where it goes wrong is a question about peers. A client's connections are told
apart by the remote endpoint (address and port), a server's by the local port
it accepted them on. Each key has a row in `tcp_peers`, a per-CPU hash of counts:
opened, closed, reset by direction, failed by reason, payload bytes each way,
retransmits and dropped packets. tcp_lifecycle adds to the row of the
connection's peer at the same moments it adds to its unlabelled totals row,
the same amounts; the kernel walk (walk.py) adds an open connection's bytes to
its peer's row as it adds them to the totals. So every event counted in the
totals is counted once in exactly one peer row.

Named networks (labels.networks: name -> CIDR list) group remote addresses:
an LPM trie of prefixes -> network id, looked up in the kernel, so a fleet of
clients (or of servers) takes one row per port. A server's rows carry the
network of the client, or none: a server does not tell its clients apart by
address (that would be a row per client).

The cap. The map holds limits.tcp_peers keys, plus one OTHER row per role that
user space makes first (network id OTHER_NETWORK). A new key that finds the
map full is counted in its role's OTHER row, so nothing goes uncounted;
user space logs it once, naming the key. Rows are never deleted, so a key
keeps its row once it has one, and every series only goes up.

Behind NAT. A client whose destination netfilter rewrote (DNAT: a Service's
virtual IP) has its row keyed by the address it dialed and by the backend
that answered, when tcp_nat (nat.py) saw the translation: see there.

Not kept per peer: the RTT, duration and connect-latency histograms. Each is 39
slots; three per peer would make a row 9 times as large and an end's update
touch three more cache lines, for figures the unlabelled histograms give.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Mapping, Optional

from asm import DW, R0, R1, R2, R3, R4, R10, B, Frame, H, Program, Record, Register, Slot, W, array, u8, u16, u32

from ...bpf.maps import U32, U64, ArrayMap, LpmTrieMap, LruHashMap, Map, PerCpuHashMap, StructCodec
from ...bpf.syscall import UpdateFlags
from ...btf import KernelTypes
from ...figures import Labels, counter
from ...vocabulary import CLIENT, FAILURE_REASONS, OTHER, RESET_DIRECTIONS, ROLES, SERVER
from ..toolkit.kernel_memory import emit_read_bytes, emit_read_field
from ..toolkit.map_calls import emit_map_lookup
from ..toolkit.record_codec import RecordCodec
from ..toolkit.stack import emit_zero

log = logging.getLogger(__name__)

PEERS = "tcp_peers"
ZERO_ROW = "tcp_peer_zero"
NETWORKS = "tcp_networks"
NAT = "tcp_nat"
#: One u64, set to 1 by tcp_nat with the first translation it keeps: until then a connection's peer needs no
#: lookup in NAT (an array lookup the verifier inlines, instead of a hash lookup per event).
NAT_SEEN = "tcp_nat_seen"
#: Peers counted by default (config limits.tcp_peers), beyond which new ones count under OTHER.
CAPACITY = 1024
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6

#: A peer: role, then for a client the remote port and address (or its named network), and the backend a
#: DNAT rewrote it to; for a server the local port (and the client's named network). Ports in network
#: order (a server's local port in host order, as the connection's entry keeps it).
PEER = Record("tcp_peer", [
    ("role", u8),
    ("family", u8),  # of `address`: AF_INET (first 4 bytes) or AF_INET6; 0 when there is none
    ("port", u16),
    ("network", u32),  # 1 + index in labels.networks; 0: none; OTHER_NETWORK: the role's row past the cap
    ("address", array(u8, 16)),
    ("backend_port", u16),  # network order; 0: no translation seen
    ("pad", u16),
    ("backend", array(u8, 4)),  # IPv4
])
OTHER_NETWORK = (1 << 32) - 1


class Slots:
    """Where a peer row's counts live (u64 each): the contract between the probes and the reader."""

    OPENED = 0
    CLOSED = 1
    RESET = 2  # + index in RESET_DIRECTIONS
    FAILED = RESET + len(RESET_DIRECTIONS)  # + index in FAILURE_REASONS; then every other errno
    FAILED_OTHER = FAILED + len(FAILURE_REASONS)
    BYTES_SENT = FAILED_OTHER + 1
    BYTES_RECEIVED = BYTES_SENT + 1
    RETRANSMITS = BYTES_RECEIVED + 1
    DROPS = RETRANSMITS + 1
    COUNT = DROPS + 1


ROW = StructCodec(f"={Slots.COUNT}Q")
#: The networks trie's key: prefix length, then an IPv6 address (IPv4 ones v4-mapped, their prefix + 96).
NETWORK_KEY = Record("tcp_network_key", [("prefixlen", u32), ("address", array(u8, 16))])
#: The NAT map: the tuple the application dialed (IPv4, network order) -> the backend it was rewritten to.
NAT_KEY = Record("tcp_nat_key", [("saddr", u32), ("daddr", u32), ("sport", u16), ("dport", u16)])
NAT_BACKEND = Record("tcp_nat_backend", [("address", u32), ("port", u16), ("pad", u16)])
#: Translations remembered at once (connections being opened or open); the least recently used goes first.
NAT_CAPACITY = 65536


def other_key(role: int) -> dict:
    return {"role": role, "family": 0, "port": 0, "network": OTHER_NETWORK, "address": bytes(16),
            "backend_port": 0, "pad": 0, "backend": bytes(4)}


def peers_map(capacity: int = CAPACITY) -> PerCpuHashMap:
    """Peer -> counts, `capacity` peers and each role's OTHER row (made here, first)."""
    rows = PerCpuHashMap(RecordCodec(PEER), ROW, capacity + len(ROLES), name="gsp_tcp_peers")
    for role in range(len(ROLES)):
        rows[other_key(role)] = (0,) * Slots.COUNT
    return rows


def network_key(cidr: str) -> dict:
    """A CIDR as the networks trie's key (IPv4 v4-mapped)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if net.version == 4:
        return {"prefixlen": 96 + net.prefixlen,
                "address": ipaddress.IPv6Address(f"::ffff:{net.network_address}").packed}
    return {"prefixlen": net.prefixlen, "address": net.network_address.packed}


def networks_map(target=None) -> LpmTrieMap:
    """The named networks' prefixes -> 1 + the network's index in labels.networks."""
    networks = target.networks if target is not None else ()
    prefixes = sum(len(cidrs) for _, cidrs in networks)
    trie = LpmTrieMap(RecordCodec(NETWORK_KEY), U32, max(prefixes, 1), name="gsp_tcp_nets")
    for index, (_, cidrs) in enumerate(networks):
        for cidr in cidrs:
            trie[network_key(cidr)] = index + 1
    return trie


def nat_map(capacity: int = NAT_CAPACITY) -> LruHashMap:
    return LruHashMap(RecordCodec(NAT_KEY), RecordCodec(NAT_BACKEND), capacity, name="gsp_tcp_nat")


class PeerSlots:
    """A program's stack slots for counting by peer: the key, the lookups' key, and what one event adds.

    The stack is 512 bytes, and a program with records and per-process counts has little left: it may
    lend slots its later steps fill only after the peer is counted (`key` and `lookup`, at least PEER's
    and NETWORK_KEY's size) and a read scratch slot. The network and NAT lookups share one key slot (the
    network is looked up first)."""

    def __init__(self, frame: Frame, key: Optional[Slot] = None, lookup: Optional[Slot] = None,
                 scratch: Optional[Slot] = None):
        self.key = _view(key, PEER) if key is not None else frame.alloc("peer", PEER)
        self.network = _view(lookup, NETWORK_KEY) if lookup is not None else frame.alloc("peer lookup", NETWORK_KEY)
        self.nat = _view(self.network, NAT_KEY)
        self.scratch = scratch if scratch is not None else frame.alloc("peer scratch", size=8)
        #: The slot (Slots) the event counts one in, or NONE; then what it adds to the bytes, etc.
        self.outcome, self.sent, self.received, self.retransmits, self.drops = (
            frame.alloc(f"peer {name}", size=8) for name in ("outcome", "sent", "received", "retransmits", "drops"))

    NONE = -1

    def clear(self, p: Program) -> None:
        """Nothing to add yet (the caller stores what its event adds)."""
        p.st(DW, R10, self.outcome.at(), self.NONE)
        for slot in (self.sent, self.received, self.retransmits, self.drops):
            p.st(DW, R10, slot.at(), 0)


def _view(slot: Slot, record: Record) -> Slot:
    """`slot`'s stack bytes seen as `record`: one slot lent to two steps that never need it at once."""
    if slot.size < record.size:
        raise ValueError(f"slot {slot.name!r} ({slot.size} bytes) cannot hold {record.name} ({record.size})")
    return Slot(slot._frame, f"{slot.name} as {record.name}", slot.offset, record.size, record)


def emit_peer_key(p: Program, s: PeerSlots, sk: Register, types: KernelTypes, direct: bool,
                  networks: bool = True) -> None:
    """s.key = the peer of the socket `sk` (a callee-saved register) for the role in R1 and the local port
    (host order) in R2; `networks`: named networks are configured (without, no lookup). Clobbers R0-R5."""
    server, addressed, nat_done = (p.new_label(f"peer.{name}") for name in ("server", "addressed", "nat_done"))
    emit_zero(p, s.key)
    if networks:
        emit_zero(p, s.network)
    p.stx(B, R10, s.key.at("role"), R1)
    p.stx(H, R10, s.key.at("port"), R2)  # a server's; a client's is the remote port, below
    _emit_remote_address(p, s, sk, types, direct, networks)
    if networks:  # the named network of the remote address, if any
        p.st(W, R10, s.network.at("prefixlen"), 128)
        emit_map_lookup(p, NETWORKS, s.network)
        p.jeq(R0, 0, addressed)
        p.ldx(W, R1, R0, 0)
        p.stx(W, R10, s.key.at("network"), R1)
        _emit_no_address(p, s)  # grouped: no address of its own
    p.label(addressed)
    p.ldx(B, R1, R10, s.key.at("role"))
    p.jne(R1, CLIENT, server)
    emit_read_field(p, R1, sk, types.field("sock_common.skc_dport"), s.scratch, direct)
    p.stx(H, R10, s.key.at("port"), R1)
    _emit_backend(p, s, sk, types, direct, nat_done)
    p.ja(nat_done)
    p.label(server)  # a server tells clients apart by named network only
    _emit_no_address(p, s)
    p.label(nat_done)


def _emit_no_address(p: Program, s: PeerSlots) -> None:
    for offset in (0, 8):
        p.st(DW, R10, s.key.at("address", offset), 0)
    p.st(B, R10, s.key.at("family"), 0)


def _emit_remote_address(p: Program, s: PeerSlots, sk: Register, types: KernelTypes, direct: bool,
                         networks: bool) -> None:
    """The socket's family and remote address into s.key, and with `networks` the address v4-mapped into
    s.network."""
    emit_read_field(p, R1, sk, types.field("sock_common.skc_family"), s.scratch, direct)
    p.stx(B, R10, s.key.at("family"), R1)
    v6 = types.optional_field("sock_common.skc_v6_daddr")
    done = p.new_label("peer.address_done")
    if v6 is not None:
        ipv4 = p.new_label("peer.ipv4")
        p.jne(R1, AF_INET6, ipv4)
        emit_read_bytes(p, sk, v6.offset, 16, s.key.at("address"), direct)
        for offset in (0, 4, 8, 12) if networks else ():  # the trie key's address is 4-byte aligned
            p.ldx(W, R1, R10, s.key.at("address", offset))
            p.stx(W, R10, s.network.at("address", offset), R1)
        p.ja(done)
        p.label(ipv4)
    emit_read_bytes(p, sk, types.field("sock_common.skc_daddr").offset, 4, s.key.at("address"), direct)
    if networks:
        p.ldx(W, R1, R10, s.key.at("address"))
        p.stx(W, R10, s.network.at("address", 12), R1)
        p.st(H, R10, s.network.at("address", 10), 0xFFFF)
    p.label(done)


def _emit_backend(p: Program, s: PeerSlots, sk: Register, types: KernelTypes, direct: bool, none: str) -> None:
    """A client's backend, where tcp_nat saw its destination rewritten: looked up by the socket's own
    tuple (IPv4), into s.key; a jump to `none` if there is none."""
    p.ldx(B, R1, R10, s.key.at("family"))
    p.jne(R1, AF_INET, none)
    p.st(W, R10, s.scratch.at(), 0)
    emit_map_lookup(p, NAT_SEEN, s.scratch)
    p.jeq(R0, 0, none)
    p.ldx(DW, R1, R0, 0)
    p.jeq(R1, 0, none)
    emit_read_field(p, R1, sk, types.field("sock_common.skc_rcv_saddr"), s.scratch, direct)
    p.stx(W, R10, s.nat.at("saddr"), R1)
    emit_read_field(p, R1, sk, types.field("sock_common.skc_daddr"), s.scratch, direct)
    p.stx(W, R10, s.nat.at("daddr"), R1)
    # The local port as the kernel keeps it (host order, a direct load where the socket is typed), into
    # network order; where the kernel has released it, inet_sport (past struct sock: a probe read).
    sport = p.new_label("peer.sport")
    emit_read_field(p, R1, sk, types.field("sock_common.skc_num"), s.scratch, direct)
    p.to_be(R1, 16)
    p.jne(R1, 0, sport)
    emit_read_field(p, R1, sk, types.field("inet_sock.inet_sport"), s.scratch)
    p.label(sport)
    p.stx(H, R10, s.nat.at("sport"), R1)
    p.ldx(H, R1, R10, s.key.at("port"))
    p.stx(H, R10, s.nat.at("dport"), R1)
    emit_map_lookup(p, NAT, s.nat)
    p.jeq(R0, 0, none)
    p.ldx(W, R1, R0, NAT_BACKEND.offset("address"))
    p.stx(W, R10, s.key.at("backend"), R1)
    p.ldx(H, R1, R0, NAT_BACKEND.offset("port"))
    p.stx(H, R10, s.key.at("backend_port"), R1)


def emit_peer_other(p: Program, s: PeerSlots, role: Register | int) -> None:
    """s.key = the OTHER row of `role` (a register, or CLIENT or SERVER)."""
    emit_zero(p, s.key)
    if isinstance(role, Register):  # a Register is an int too: test it first
        p.stx(B, R10, s.key.at("role"), role)
    else:
        p.st(B, R10, s.key.at("role"), role)
    p.st(W, R10, s.key.at("network"), -1)


def emit_peer_count(p: Program, s: PeerSlots, done: str, figures: bool = True) -> None:
    """Add what s says (one in s.outcome's slot, then the bytes, retransmits and drops) to s.key's row,
    made zeroed if new, or to its role's OTHER row once the map is full. Clobbers R0-R5. Falls through when
    done, or jumps to `done` (when the OTHER row is missing, which user space made first)."""
    found = p.new_label("peer.found")
    emit_map_lookup(p, PEERS, s.key)
    p.jne(R0, 0, found)
    # A new peer gets a zeroed row. Full (E2BIG), or made by another CPU first (EEXIST): look again.
    p.st(W, R10, s.scratch.at(), 0)
    emit_map_lookup(p, ZERO_ROW, s.scratch)  # a zeroed row to copy, where the stack has no room for one
    p.jeq(R0, 0, done)
    p.mov(R3, R0)
    p.ld_map(R1, PEERS)
    p.mov(R2, R10)
    p.add(R2, s.key.at())
    p.mov(R4, UpdateFlags.NOEXIST)
    p.call("map_update_elem")
    emit_map_lookup(p, PEERS, s.key)
    p.jne(R0, 0, found)
    p.ldx(B, R1, R10, s.key.at("role"))  # the map is full: the role's OTHER row
    emit_peer_other(p, s, R1)
    emit_map_lookup(p, PEERS, s.key)
    p.jeq(R0, 0, done)

    p.label(found)
    skip = p.new_label("peer.no_outcome")
    p.ldx(DW, R1, R10, s.outcome.at())
    p.jge(R1, Slots.COUNT, skip)  # NONE, as unsigned
    p.lsh(R1, 3)
    p.mov(R2, R0)
    p.add(R2, R1)
    p.mov(R1, 1)
    p.atomic_add(DW, R2, 0, R1)
    p.label(skip)
    for slot, at in ((s.sent, Slots.BYTES_SENT), (s.received, Slots.BYTES_RECEIVED),
                     (s.retransmits, Slots.RETRANSMITS), (s.drops, Slots.DROPS)) if figures else ():
        p.ldx(DW, R1, R10, slot.at())
        p.atomic_add(DW, R0, 8 * at, R1)


MAPS = {PEERS: peers_map, NETWORKS: networks_map, ZERO_ROW: lambda: ArrayMap(ROW, 1, name="gsp_tcp_pzero")}
SHARED_MAPS = {NAT: nat_map, NAT_SEEN: lambda: ArrayMap(U64, 1, name="gsp_tcp_natseen")}  # tcp_nat fills them
MAPS_WANTED = {name: (lambda target: target.peers) for name in (PEERS, NETWORKS, NAT, NAT_SEEN, ZERO_ROW)}

#: The labels of every per-peer series: see docs/peers.md. A client's row has peer_address (or network),
#: peer_port and, behind a DNAT, backend_address and backend_port; a server's has local_port (and network).
PEER_LABELS = ("role", "network", "peer_address", "peer_port", "backend_address", "backend_port", "local_port")

PEER_OPENED = counter("peer_connections_opened_total", PEER_LABELS,
                      "TCP connections opened, by peer (labels.peers).", dogstatsd="peer.connections.opened")
PEER_CLOSED = counter("peer_connections_closed_total", PEER_LABELS,
                      "TCP connections closed in order, by peer.", dogstatsd="peer.connections.closed")
PEER_RESET = counter("peer_connections_reset_total", (*PEER_LABELS, "direction"),
                     "TCP connections ended by a reset, by peer and who sent it.",
                     dogstatsd="peer.connections.reset")
PEER_FAILED = counter("peer_connections_failed_total", (*PEER_LABELS, "reason"),
                      "TCP active opens that never reached ESTABLISHED, by peer and reason (other: any errno "
                      "without a reason of its own).", dogstatsd="peer.connections.failed")
PEER_BYTES = counter("peer_bytes_total", (*PEER_LABELS, "direction"),
                     "TCP payload bytes, by peer: open connections' as the kernel walk counts them, ended ones' "
                     "at their end.", unit="bytes", dogstatsd="peer.bytes")
PEER_RETRANSMITS = counter("peer_retransmits_total", PEER_LABELS,
                           "TCP segments retransmitted by ended connections, by peer.",
                           dogstatsd="peer.retransmits")
PEER_DROPS = counter("peer_drops_total", PEER_LABELS,
                     "Packets of ended TCP connections the kernel dropped, by peer.", dogstatsd="peer.drops")
METRICS = (PEER_OPENED, PEER_CLOSED, PEER_RESET, PEER_FAILED, PEER_BYTES, PEER_RETRANSMITS, PEER_DROPS)


class PeerRows:
    """Reads tcp_peers into the per-peer series, and the unlabelled figures they add up to.

    One pass over the map gives both, so at every collection the sum over peers (OTHER included) is the
    unlabelled total exactly: two reads of two maps, each changing as it is read, could not promise that.
    """

    def __init__(self, rows: Map, networks: tuple[tuple[str, tuple[str, ...]], ...] = ()):
        self._rows = rows
        self._names = {index + 1: name for index, (name, _) in enumerate(networks)}
        self._labels: dict[tuple, Labels] = {}
        self._cap_logged = False

    def read(self) -> tuple[dict, list[list[int]]]:
        """(series by metric name, the sum of every row's slots by role)."""
        series: dict[str, dict[Labels, int]] = {spec.name: {} for spec in METRICS}
        total = [[0] * Slots.COUNT for _ in ROLES]
        for key, per_cpu in self._rows.items():
            row = [sum(values) for values in zip(*per_cpu)]
            if not any(row):
                continue
            peer = self._peer_labels(key)
            for slot, value in enumerate(row):
                total[key.role % len(ROLES)][slot] += value
            _add(series, PEER_OPENED, peer, row[Slots.OPENED])
            _add(series, PEER_CLOSED, peer, row[Slots.CLOSED])
            for i, direction in enumerate(RESET_DIRECTIONS):
                _add(series, PEER_RESET, peer + (("direction", direction),), row[Slots.RESET + i])
            for i, reason in enumerate((*FAILURE_REASONS, OTHER)):
                _add(series, PEER_FAILED, peer + (("reason", reason),), row[Slots.FAILED + i])
            _add(series, PEER_BYTES, peer + (("direction", "sent"),), row[Slots.BYTES_SENT])
            _add(series, PEER_BYTES, peer + (("direction", "received"),), row[Slots.BYTES_RECEIVED])
            _add(series, PEER_RETRANSMITS, peer, row[Slots.RETRANSMITS])
            _add(series, PEER_DROPS, peer, row[Slots.DROPS])
        return {name: {tuple(sorted(labels_)): n for labels_, n in by.items()} for name, by in series.items()}, total

    def _peer_labels(self, key) -> tuple:
        found = self._labels.get(key)
        if found is None:
            found = self._labels[key] = peer_labels(key, self._names)
            if key.network == OTHER_NETWORK:
                self._log_cap()
        return found

    def _log_cap(self) -> None:
        if not self._cap_logged:
            self._cap_logged = True
            log.warning("tcp: more peers than the peer map holds (%d): later ones count under peer_address='%s'; "
                        "raise limits.tcp_peers, or group addresses with labels.networks",
                        self._rows.max_entries - len(ROLES), OTHER)


def _add(series: dict, spec, label_set: tuple, value: int) -> None:
    by = series[spec.name]
    by[label_set] = by.get(label_set, 0) + value


def peer_labels(key, network_names: Mapping[int, str]) -> tuple:
    """A peer row's key as its label pairs (PEER_LABELS order)."""
    role = ROLES[key.role] if key.role < len(ROLES) else f"role{key.role}"
    values = dict.fromkeys(PEER_LABELS, "")
    values["role"] = role
    if key.network == OTHER_NETWORK:
        values["peer_address" if key.role == CLIENT else "local_port"] = OTHER
        return tuple(values.items())
    if key.network:
        values["network"] = network_names.get(key.network, f"network{key.network}")
    if key.role == SERVER:
        values["local_port"] = str(key.port)
        return tuple(values.items())
    if key.family == AF_INET:
        values["peer_address"] = socket.inet_ntop(AF_INET, bytes(key.address)[:4])
    elif key.family == AF_INET6:
        values["peer_address"] = socket.inet_ntop(AF_INET6, bytes(key.address))
    values["peer_port"] = str(socket.ntohs(key.port))
    if key.backend_port:
        values["backend_address"] = socket.inet_ntop(AF_INET, bytes(key.backend))
        values["backend_port"] = str(socket.ntohs(key.backend_port))
    return tuple(values.items())


def derive_totals(row: list[int], by_role: list[list[int]], totals) -> None:
    """The unlabelled figures the peer rows hold, in `row` (the totals row's layout, `totals` its slots), set
    to the peer rows' sums: what one read of the peer map gives, so that they add up at every collection."""
    for role in range(len(ROLES)):
        row[totals.OPENED + role] = by_role[role][Slots.OPENED]
        row[totals.CLOSED + role] = by_role[role][Slots.CLOSED]
    for i in range(len(RESET_DIRECTIONS)):
        row[totals.RESET + i] = sum(counts[Slots.RESET + i] for counts in by_role)
    for i in range(len(FAILURE_REASONS)):
        row[totals.FAILED + i] = sum(counts[Slots.FAILED + i] for counts in by_role)
    for at, slot in ((totals.BYTES_SENT, Slots.BYTES_SENT), (totals.BYTES_RECEIVED, Slots.BYTES_RECEIVED),
                     (totals.RETRANSMITS, Slots.RETRANSMITS)):
        row[at] = sum(counts[slot] for counts in by_role)
