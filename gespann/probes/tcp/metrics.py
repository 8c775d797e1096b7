"""tcp_lifecycle's reader: the kernel's aggregates for ended connections, plus what open connections moved so far.

Everything about a connection that has ended is summed in the kernel
(tcp_lifecycle's per-CPU row); user space reads it once per collection. Bytes
must also show while a connection is open, so each collection adds the bytes
of the connections open now, from sock_diag.

Why nothing is counted twice. The kernel unhashes a socket (sock_diag can no
longer find it) before the state change to CLOSE that makes the probe add its
bytes to the row. The row is read first and sock_diag asked after, so a
connection is in the row read or in the dump, never both. A connection that
ends between the two reads is in neither: the bytes total dips by at most
what those connections moved, for one collection. The total is held at its
highest value so far, so a counter never goes down, and the next collection,
which finds them in the row, is exact again. One over-count stays: the dump
reads a socket's state without the socket's lock and its counters under it,
so a peer's FIN that lands between the two is counted as a received byte of
a connection the state says has no FIN yet, and the hold keeps that byte
until real traffic outgrows it. The kernel walk has neither.

Sent bytes are payload transmitted at least once (tcpi_bytes_sent less
tcpi_bytes_retrans), as the kernel counts them at the end. Only before 4.19,
without those, are they taken from `bytes_acked`, which includes a client's
SYN: then the role of an open connection is taken from the kernel's entry for
it (matched by ports), read after the dump so that every connection the dump
shows established has its entry already. From 4.19 a collection reads no entry.

Where the kernel runs it (probes/tcp_walk.py), a collection does not read
open connections at all: it runs the kernel walk, which adds what each open
connection moved since it was last counted to the same row, once, and counts
the open and idle ones. The row is then read after the walk, and every figure
is the kernel's own: nothing is held at a maximum, and the cost in user space
does not grow with the connections open. The walk's idle threshold is in
jiffies, so the kernel's HZ is measured from two walks' clocks (`JiffyClock`).
The rest of this docstring is the sock_diag path, taken where the walk cannot run.

Connections open before gespann started are found at start-up and adopted:
each goes into the kernel's adopted map by its cookie, with its payload at
that moment and a role (server when something listens on its local port,
client otherwise: a guess, the one thing the kernel cannot tell afterwards).
They count in `connections_open` but not as opened, and only the bytes they
move after the start count: while open, from the dump less their counts at
start; when one ends, the kernel counts that end (close or reset, its bytes
since the start, a record marked pre-existing) like any other. One the
adopted map could not take (full) is left to user space as before: its end is
untracked (`connection_ends_untracked_total`), and what it moved since the last
collection is not seen. An end without its entry is otherwise an eviction from
a full connection map, logged once with the config key that raises the bound
(limits.tcp_connections).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Mapping, Optional

from ...bpf.errors import BPFError
from ...bpf.maps import Map
from ...bpf.syscall import UpdateFlags
from ...figures import Histogram, Labels, Series, Value, labels
from ...vocabulary import ABORTED, BOUNDS_SECONDS, FAILURE_REASONS, OUTCOMES, RESET_DIRECTIONS, ROLES
from ..toolkit.reading import OwnerCounts, ReadContext, Reader
from .connections import ADOPTED, CLIENT, ENTRY, MAP_NAME, SERVER
from .open_sockets import OpenConnection, OpenSockets
from .peers import PEERS, PeerRows, derive_totals
from .totals import (
    BY_PROCESS,
    BYTES_RECEIVED_SLOT,
    BYTES_SENT_SLOT,
    FAILED_ERRNOS,
    FAILURE_ERRNOS,
    OTHER_OWNER,
    STATS,
    HistogramSlots,
    Totals,
)
from .walk import TcpWalk, WalkTotals

log = logging.getLogger(__name__)


@dataclass
class _Preexisting:
    """A connection open at start-up: its payload counts then, and what it has moved since."""

    at_start: tuple[int, int]
    since_start: tuple[int, int] = (0, 0)
    #: In the kernel's adopted map: its end is counted there, with its bytes since the start.
    adopted: bool = False


class JiffyClock:
    """The kernel's HZ: CONFIG_HZ from the kernel's config where it can be read, otherwise from two
    (jiffies, ktime) readings taken by walks at least MIN_SPAN apart, as the nearest of the values Linux
    is configured with on the architectures gespann runs on."""

    CHOICES = (100, 250, 300, 1000)
    MIN_SPAN_NS = 50_000_000  # 50 ms: 5 jiffies at 100 Hz, and 250 and 300 Hz are 2.5 jiffies apart

    def __init__(self, first: WalkTotals):
        self._first = first
        self.hz: Optional[int] = configured_hz()

    def measure(self, later: WalkTotals) -> Optional[int]:
        span = later.ktime_ns - self._first.ktime_ns
        if span >= self.MIN_SPAN_NS:
            rate = (later.jiffies - self._first.jiffies) * 1e9 / span
            self.hz = min(self.CHOICES, key=lambda hz: abs(hz - rate))
        return self.hz

    def wait_ns(self) -> int:
        """How long to wait before a reading can measure, counted from the first one."""
        return max(self.MIN_SPAN_NS - (time.monotonic_ns() - self._first.ktime_ns), 0)


def configured_hz() -> Optional[int]:
    """CONFIG_HZ of the running kernel, from /boot/config-RELEASE or /proc/config.gz; None if neither."""
    import gzip
    import os
    import re

    for path, opener in ((f"/boot/config-{os.uname().release}", open), ("/proc/config.gz", gzip.open)):
        try:
            with opener(path, "rt") as config:
                found = re.search(r"^CONFIG_HZ=(\d+)$", config.read(), re.MULTILINE)
        except (OSError, EOFError, ValueError):
            continue
        if found:
            return int(found.group(1))
    return None


class TcpMetrics(Reader):
    """Reads tcp_lifecycle's maps and the open connections into catalogue series: through the kernel
    walk where there is one (`walk`, run in `netns_path`), from sock_diag otherwise."""

    def __init__(self, maps: Mapping[str, Map], open_sockets: OpenSockets, idle_timeout: float = 60.0,
                 walk: Optional[TcpWalk] = None, netns_path: Optional[str] = None,
                 networks: tuple[tuple[str, tuple[str, ...]], ...] = ()):
        self._idle_timeout = idle_timeout
        #: Per-peer rows (labels.peers): the unlabelled figures they cover are read from them, see PeerRows.
        self._peers = PeerRows(maps[PEERS], networks) if PEERS in maps else None
        self._row, self._errnos = maps[STATS], maps[FAILED_ERRNOS]
        self._connections = maps[MAP_NAME]
        self._owners = maps.get(BY_PROCESS)
        self._open_sockets = open_sockets
        self._walk, self._netns_path = walk, netns_path
        self._preexisting = self._adopt(maps[ADOPTED])
        self._preexisting_ended = (0, 0)
        self._preexisting_ends = 0  # pre-existing connections seen to end
        self._eviction_logged = False
        self._bytes = (0, 0)  # the highest totals reported so far (sock_diag path)
        self._clock: Optional[JiffyClock] = None
        if walk is not None:
            # The walk counts their bytes now; those the adopted map could not take end untracked.
            self._preexisting_ends = sum(not p.adopted for p in self._preexisting.values())
            self._preexisting = {}
            self._clock = JiffyClock(walk.run(0, netns_path, adopt=True))

    @classmethod
    def from_context(cls, context: ReadContext) -> "TcpMetrics":
        if context.by_process and BY_PROCESS not in context.maps:
            raise ValueError("per-process labels need tcp_lifecycle attached with by-process counts")
        target = context.attached.target
        return cls(context.maps, OpenSockets(context.netns_path), context.idle_timeout, context.walk,
                   context.netns_path, target.networks if target is not None else ())

    def owners(self) -> list[OwnerCounts]:
        """The kernel's by-process rows: ends by outcome and payload bytes, per cgroup and comm."""
        if self._owners is None:
            return []
        return [OwnerCounts(owner.cgroup_id, bytes(owner.comm).split(b"\0", 1)[0].decode("utf-8", "replace"),
                            "tcp", dict(zip(OUTCOMES, counts)), counts[BYTES_SENT_SLOT],
                            counts[BYTES_RECEIVED_SLOT], other=owner.cgroup_id == OTHER_OWNER["cgroup_id"])
                for owner, counts in self._owners.items() if any(counts)]

    def close(self) -> None:
        self._open_sockets.close()

    def series(self) -> Series:
        peer_series: Series = {}
        if self._walk is not None:
            walked = self._run_walk()
            row = self._read_row(peer_series)  # after the walk, which adds to it
            open_count, idle_count = walked.open, walked.idle
            bytes_total = {labels(protocol="tcp", direction="sent"): row[Totals.BYTES_SENT],
                           labels(protocol="tcp", direction="received"): row[Totals.BYTES_RECEIVED]}
        else:
            row = self._read_row(peer_series)
            open_now = self._open_sockets.connections()  # after the row: see the module docstring
            roles = self._roles() if any(c.needs_role for c in open_now) else {}
            bytes_total = self._bytes_total(row, open_now, roles)
            open_count = len(open_now)
            idle_count = sum(c.idle_seconds > self._idle_timeout for c in open_now)
        failed_errnos = dict(self._errnos.items())
        tcp = labels(protocol="tcp")
        self._log_evictions(row[Totals.UNTRACKED])
        return {
            "connections_open": {tcp: open_count},
            "connections_idle": {tcp: idle_count},
            "connections_opened_total": {labels(protocol="tcp", role=role): row[Totals.OPENED + i]
                                         for i, role in enumerate(ROLES)},
            "connections_closed_total": {labels(protocol="tcp", role=role): row[Totals.CLOSED + i]
                                         for i, role in enumerate(ROLES)},
            "connections_reset_total": {labels(direction=d): row[Totals.RESET + i]
                                        for i, d in enumerate(RESET_DIRECTIONS)},
            "connections_failed_total": _failures(row, failed_errnos),
            "bytes_total": bytes_total,
            "connection_ends_untracked_total": {tcp: row[Totals.UNTRACKED]},
            "retransmits_total": {(): row[Totals.RETRANSMITS]},
            "rtt_seconds": {(): _histogram(row, Totals.RTT)},
            "connection_duration_seconds": {tcp: _histogram(row, Totals.DURATION)},
            "connect_latency_seconds": {(): _histogram(row, Totals.CONNECT_LATENCY)},
            **peer_series,
        }

    def _read_row(self, peer_series: dict) -> list[int]:
        """The totals row summed over CPUs; with per-peer rows, the figures they cover taken from them instead
        (their series into `peer_series`), so that the sum over peers is the total at every collection."""
        row = [sum(per_cpu) for per_cpu in zip(*self._row[0])]
        if self._peers is not None:
            series, by_role = self._peers.read()
            peer_series.update(series)
            derive_totals(row, by_role, Totals)
        return row

    def kernel_row(self) -> list[int]:
        """The kernel's own totals row, summed over CPUs: what tests hold the per-peer rows against."""
        return [sum(per_cpu) for per_cpu in zip(*self._row[0])]

    def _run_walk(self) -> WalkTotals:
        """One kernel walk with the idle threshold in jiffies; the first also measures HZ, with a walk
        before it if the start-up walk was too recent to measure from."""
        assert self._walk is not None and self._clock is not None
        if self._clock.hz is None:
            time.sleep(self._clock.wait_ns() / 1e9)
            self._clock.measure(self._walk.run(0, self._netns_path))
        threshold = int(self._idle_timeout * (self._clock.hz or 1000))
        walked = self._walk.run(threshold, self._netns_path)
        self._clock.measure(walked)
        return walked

    def _adopt(self, adopted: Map) -> dict[int, _Preexisting]:
        """The connections open now that the kernel does not follow, each put in the adopted map if it can."""
        followed = set(self._roles())
        listening = self._open_sockets.listening_ports()
        now_ns = time.monotonic_ns()  # bpf_ktime_get_ns's clock: the adopted ones' durations start now
        preexisting = {}
        for connection in self._open_sockets.connections():
            if (connection.local_port, connection.remote_port) in followed:
                continue
            role = SERVER if connection.local_port in listening else CLIENT
            at_start = connection.payload(is_client=role == CLIENT)
            entry = dict.fromkeys((field.name for field in ENTRY.fields), 0)
            entry.update(established_ns=now_ns, role=role, local_port=connection.local_port,
                         remote_port=socket.htons(connection.remote_port), comm=bytes(16),
                         sent_at_start=at_start[0], received_at_start=at_start[1])
            try:
                adopted.update(connection.cookie, entry, UpdateFlags.NOEXIST)
                is_adopted = True
            except BPFError as err:  # full: its end will be untracked, and said
                log.debug("connection %d not adopted: %s", connection.cookie, err)
                is_adopted = False
            preexisting[connection.cookie] = _Preexisting(at_start, adopted=is_adopted)
        return preexisting

    def _log_evictions(self, untracked: int) -> None:
        """Once: ends without an entry beyond those of connections open before the start mean evictions."""
        if self._eviction_logged or untracked <= self._preexisting_ends:
            return
        self._eviction_logged = True
        if self._walk is not None:
            log.warning("tcp: some connections had no entry at their end: the kernel had no memory for their "
                        "socket storage; their ends are counted in gespann_connection_ends_untracked_total")
            return
        log.warning("tcp: connections outnumber the connection map (%d entries): an evicted connection's end is "
                    "counted in gespann_connection_ends_untracked_total, not as closed or reset; raise "
                    "limits.tcp_connections to follow them all", self._connections.max_entries)

    def _roles(self) -> dict[tuple[int, int], int]:
        """(local port, remote port) -> role of each connection the kernel follows (in the map: those that
        overflowed into socket storage are not seen, and need not be, with the walk)."""
        return {(entry.local_port, socket.ntohs(entry.remote_port)): entry.role
                for entry in self._connections.values() if entry.established_ns}

    def _bytes_total(self, row: list[int], open_now: list[OpenConnection],
                     roles: Mapping[tuple[int, int], int]) -> dict[Labels, Value]:
        sent, received = row[Totals.BYTES_SENT], row[Totals.BYTES_RECEIVED]
        seen = set()
        for connection in open_now:
            earlier = self._preexisting.get(connection.cookie)
            if earlier is None:
                is_client = roles.get((connection.local_port, connection.remote_port)) == CLIENT
                s, r = connection.payload(is_client)
            else:
                now = connection.payload()
                earlier.since_start = s, r = (max(now[0] - earlier.at_start[0], 0),
                                              max(now[1] - earlier.at_start[1], 0))
                seen.add(connection.cookie)
            sent, received = sent + s, received + r
        for cookie in set(self._preexisting) - seen:  # ended
            gone = self._preexisting.pop(cookie)
            if gone.adopted:  # the kernel counted its end, bytes since the start included
                continue
            self._preexisting_ends += 1  # untracked: keep what was last seen of it
            ended = gone.since_start
            self._preexisting_ended = (self._preexisting_ended[0] + ended[0], self._preexisting_ended[1] + ended[1])
        sent, received = sent + self._preexisting_ended[0], received + self._preexisting_ended[1]
        self._bytes = (max(self._bytes[0], sent), max(self._bytes[1], received))
        return {labels(protocol="tcp", direction="sent"): self._bytes[0],
                labels(protocol="tcp", direction="received"): self._bytes[1]}


def failure_reason(number: int) -> str:
    """The name a failed open's errno (sk_err) is reported under."""
    if number == 0:
        return ABORTED
    return _REASON_BY_ERRNO.get(number) or errno.errorcode.get(number, f"errno{number}")


_REASON_BY_ERRNO = {number: reason for reason, number in FAILURE_ERRNOS.items()}


def _failures(row: list[int], failed_errnos: Mapping[int, int]) -> dict[Labels, Value]:
    failures = {labels(reason=reason): row[Totals.FAILED + i] for i, reason in enumerate(FAILURE_REASONS)}
    for number, count in failed_errnos.items():
        reason = failure_reason(number)
        failures[labels(reason=reason)] = failures.get(labels(reason=reason), 0) + count
    return failures


def _histogram(row: list[int], slots: HistogramSlots) -> Histogram:
    counts = tuple(row[slots.first:slots.sum])
    return Histogram(BOUNDS_SECONDS, counts, row[slots.sum] * slots.unit)
