"""The UDP probes' reader: metrics and flow-end events from the kernel's totals row and flow map, read and
expired when asked.

The probes (udp_send, udp_receive) only add, to the totals row and the flow
map; nothing runs in user space between collections, whatever the packet rate.
Datagrams, bytes and flows opened come from the totals row, counted in the
kernel as each datagram is seen: exact whatever the flow map could keep.
Each collection reads the row, then the whole map once, and:
- ends every flow idle for longer than `flow_timeout` seconds: it is removed
  from the map (with lookup-and-delete where the kernel has it, so its final
  counts come with the removal), its duration (first to last datagram) goes to
  the histogram, and an event is queued for `ended()`;
- counts the flows open, by role, and the idle ones;
- counts as ended, and evicted, the flows the kernel evicted from a full map
  (or could not add to it at all: counted apart too, as inserts failed):
  every flow made is open (in the map), or ended by user space, or evicted.
  The row is read before the map, so a flow made between the two reads can
  only lower that count for one collection, never raise it; the count is held
  at its highest. An evicted flow has no event: its figures went with it.
- reports as open the flows made less those ended, as of the row's read: so
  opened minus closed is open at every collection, also while flows are made
  during the read (the map may already hold some the row does not count yet;
  the next collection counts them). It equals the flows in the map once no
  flow is made during the read.
A read keeps nothing per flow. Where the kernel runs it, the read is a walk in
the kernel (probes/udp_walk.py) that counts, and hands out only the keys of
the flows to end. Elsewhere user space decodes each flow's last time and role
from the map's bytes in one pass (struct.iter_unpack). Either way only the
flows that end are decoded whole.
A flow evicted from a full map is logged once, with the config key
(limits.udp_flows) that raises the bound.

Times: the kernel stamps flows with bpf_ktime_get_ns (CLOCK_MONOTONIC), the
clock of time.monotonic_ns(). A datagram that arrives while its expired flow
is being removed is lost only if it lands between the read and the delete of
that one entry (a single syscall on 5.14+); one arriving after makes a new flow.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ...bpf.errors import KeyNotFoundError
from ...bpf.maps import Map
from ...figures import ConnectionEvent, Histogram, Series, labels
from ...vocabulary import BOUNDS_NS as _BOUNDS_NS
from ...vocabulary import BOUNDS_SECONDS, CLIENT, DIRECTIONS, ROLES
from ..toolkit.reading import ReadContext, Reader
from .flows import FLOW, KEY_CODEC, MAP_NAME, TOTALS, Totals
from .walk import UdpWalk

log = logging.getLogger(__name__)

#: Ended flows kept for ended() at most; older ones are dropped (and counted) beyond that.
MAX_PENDING_EVENTS = 65536
#: Of each flow, what a collection reads: its last datagram's time and its role (udp_flows.FLOW's layout).
_TIMES_AND_ROLE = struct.Struct(
    f"<{FLOW.offset('last_ns')}xQ{FLOW.offset('role') - FLOW.offset('last_ns') - 8}xI"
    f"{FLOW.size - FLOW.offset('role') - 4}x")


@dataclass(frozen=True)
class UdpFlow:
    """One flow as last read from the kernel; ports in host order.

    Addresses and the command name are turned into text only when asked for (an
    event, open_flows()): a collection reads every flow, and most are never shown.
    Slots, not a dict per instance: user space keeps one per open flow.
    """

    __slots__ = ("family", "local_raw", "local_port", "remote_raw", "remote_port", "netns", "role", "first_ns",
                 "last_ns", "bytes_sent", "bytes_received", "datagrams_sent", "datagrams_received", "pid",
                 "comm_raw", "cgroup_id")

    family: int
    local_raw: bytes  # as the key holds it: IPv4 in the first 4 bytes
    local_port: int
    remote_raw: bytes
    remote_port: int
    netns: int
    role: str
    first_ns: int
    last_ns: int
    bytes_sent: int
    bytes_received: int
    datagrams_sent: int
    datagrams_received: int
    pid: int  # the thread group (process) id; 0 until the flow was seen sending from a process
    comm_raw: bytes
    cgroup_id: int

    @classmethod
    def parse(cls, key: Any, value: Any) -> UdpFlow:
        """From the map's key and value records (udp_flows.KEY, udp_flows.FLOW)."""
        return cls(
            key.family, bytes(key.local_address), socket.ntohs(key.local_port), bytes(key.remote_address),
            socket.ntohs(key.remote_port), key.netns,
            ROLES[value.role] if value.role < len(ROLES) else ROLES[CLIENT],
            value.first_ns, value.last_ns, value.bytes_sent, value.bytes_received, value.datagrams_sent,
            value.datagrams_received, value.pid_tgid >> 32, bytes(value.comm), value.cgroup_id,
        )

    @property
    def local_address(self) -> str:
        return address_text(self.family, self.local_raw)

    @property
    def remote_address(self) -> str:
        return address_text(self.family, self.remote_raw)

    @property
    def comm(self) -> str:
        return self.comm_raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def identity(self) -> tuple:
        """What tells one flow from another: its key."""
        return (self.family, self.local_raw, self.local_port, self.remote_raw, self.remote_port, self.netns)

    @property
    def duration_ns(self) -> int:
        return max(self.last_ns - self.first_ns, 0)


def address_text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    return str(ipaddress.IPv6Address(bytes(raw)))


class UdpMetrics(Reader):
    """Catalogue series for UDP, and the flows that ended, from the shared flow map.

    `flows` is either attached UDP probe (both hold the same maps), or the flow map
    itself with the totals row as `totals`. `idle_timeout` and `flow_timeout` are
    seconds (config connections.idle_timeout and connections.udp_flow_timeout).
    Safe to call from several threads.

    Nothing is kept per flow between reads: a read decodes only each flow's times
    and role, straight from the kernel's bytes, and turns only ended flows into
    objects, so memory and most of the time spent do not grow with the flows open.
    """

    def __init__(self, flows: Map, totals: Map, idle_timeout: float, flow_timeout: float,
                 clock: Callable[[], int] = time.monotonic_ns, wall_clock: Callable[[], float] = time.time,
                 *, walk: UdpWalk | None = None, container_of: Callable[[int], str] | None = None):
        self._map, self._totals, self._walk = flows, totals, walk
        #: cgroup id -> container id, for events; the cgroup may be gone by the time a flow ends (idle for
        #: the flow timeout), and then the event has none.
        self._container_of = container_of
        self._idle_ns, self._timeout_ns = int(idle_timeout * 1e9), int(flow_timeout * 1e9)
        self._clock, self._wall_clock = clock, wall_clock
        self._lock = threading.Lock()
        self._open_by_role = dict.fromkeys(ROLES, 0)  # as the last read found them
        self._idle = 0
        self._closed = dict.fromkeys(ROLES, 0)  # flows user space saw end
        self._ended_unseen = dict.fromkeys(ROLES, 0)  # flows the kernel evicted (user space never saw them end)
        self._eviction_logged = False
        self._durations = [0] * (len(_BOUNDS_NS) + 1)
        self._duration_sum_ns = 0
        self._pending: deque[ConnectionEvent] = deque()
        #: Ended flows whose event was dropped because nobody took them in time.
        self.events_dropped = 0

    @classmethod
    def from_context(cls, context: ReadContext) -> "UdpMetrics":
        return cls(context.maps[MAP_NAME], context.maps[TOTALS], context.idle_timeout, context.udp_flow_timeout,
                   walk=context.walk, container_of=context.container_of)

    def series(self) -> Series:
        with self._lock:
            row = [sum(per_cpu) for per_cpu in zip(*self._totals[0])]  # before the map: see the docstring
            self._scan()
            opened = {role: row[Totals.FLOWS_MADE + i] for i, role in enumerate(ROLES)}
            closed, open_now = {}, {}
            for role in ROLES:
                unseen = opened[role] - self._closed[role] - self._open_by_role[role]
                self._ended_unseen[role] = max(self._ended_unseen[role], unseen)
                closed[role] = self._closed[role] + self._ended_unseen[role]
                # As of the row's read: the map may hold flows made since, counted next time.
                open_now[role] = max(opened[role] - closed[role], 0)
            evicted = sum(self._ended_unseen.values())
            if evicted and not self._eviction_logged:
                self._eviction_logged = True
                log.warning("udp: the flow map is full (%d flows) and the kernel evicts flows before they go idle: "
                            "totals stay exact, but an evicted flow's own figures and event are lost (counted in "
                            "gespann_flows_evicted_total); raise limits.udp_flows to keep them",
                            self._map.max_entries)
            udp = labels(protocol="udp")
            return {
                "connections_open": {udp: sum(open_now.values())},
                "connections_opened_total": {labels(protocol="udp", role=r): n for r, n in opened.items()},
                "connections_closed_total": {labels(protocol="udp", role=r): n for r, n in closed.items()},
                "connections_idle": {udp: self._idle},
                "bytes_total": {labels(protocol="udp", direction=d): row[Totals.BYTES + i]
                                for i, d in enumerate(DIRECTIONS)},
                "datagrams_total": {labels(direction=d): row[Totals.DATAGRAMS + i] for i, d in enumerate(DIRECTIONS)},
                "flows_evicted_total": {udp: evicted},
                "flow_inserts_failed_total": {labels(protocol="udp", role=r): row[Totals.INSERTS_FAILED + i]
                                              for i, r in enumerate(ROLES)},
                "connection_duration_seconds": {udp: Histogram(BOUNDS_SECONDS, tuple(self._durations),
                                                               self._duration_sum_ns * 1e-9)},
            }

    def ended(self, scan: bool = True) -> list[ConnectionEvent]:
        """The flows that ended since the last call, oldest first. The map is read now, so it need not
        wait for a collection; scan=False takes only what the last read found (right after series())."""
        with self._lock:
            if scan:
                self._scan()
            events = list(self._pending)
            self._pending.clear()
            return events

    def open_flows(self) -> list[UdpFlow]:
        """The flows open now, each decoded whole (after ending the idle ones): for inspection, not
        for collections."""
        with self._lock:
            self._scan()
            return [UdpFlow.parse(key, value) for key, value in self._map.lookup_batch()]

    def _scan(self) -> None:
        """Read the map once: count the open flows by role and the idle ones, and end those idle past the
        flow timeout (removed, with their final figures, and an event each)."""
        now = self._clock()
        open_by_role, idle, expired = [0] * len(ROLES), 0, []
        key_size = self._map.key_size
        if self._walk is not None:  # in the kernel: only the ended flows' keys come out
            walked = self._walk.run(now, self._idle_ns, self._timeout_ns)
            open_by_role, idle = list(walked.open_by_role), walked.idle
            keys = walked.ended_keys
            expired = [keys[i:i + key_size] for i in range(0, len(keys), key_size)]
        else:
            for keys, values, _ in self._map.raw_chunks():
                for i, (last_ns, role) in enumerate(_TIMES_AND_ROLE.iter_unpack(values)):
                    age = now - last_ns
                    if age > self._timeout_ns:
                        expired.append(keys[i * key_size:(i + 1) * key_size])
                        continue
                    open_by_role[role if role < len(ROLES) else CLIENT] += 1
                    idle += age > self._idle_ns
        for raw_key in expired:
            key = KEY_CODEC.parse(raw_key)
            try:
                final = UdpFlow.parse(key, self._map.pop(key))
            except KeyNotFoundError:  # evicted since the read: counted among the unseen ends
                continue
            self._end(final, "")
        self._open_by_role, self._idle = dict(zip(ROLES, open_by_role)), idle

    def _end(self, flow: UdpFlow, reason: str) -> None:
        self._closed[flow.role] += 1
        self._durations[bisect.bisect_left(_BOUNDS_NS, flow.duration_ns)] += 1
        self._duration_sum_ns += flow.duration_ns
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self._pending.popleft()
            self.events_dropped += 1
        self._pending.append(ConnectionEvent(
            timestamp=self._wall_clock(), protocol="udp", role=flow.role, outcome="close", reason=reason,
            pid=flow.pid, comm=flow.comm, local_address=flow.local_address, local_port=flow.local_port,
            remote_address=flow.remote_address, remote_port=flow.remote_port, bytes_sent=flow.bytes_sent,
            bytes_received=flow.bytes_received, duration_seconds=flow.duration_ns * 1e-9,
            datagrams_sent=flow.datagrams_sent, datagrams_received=flow.datagrams_received,
            cgroup_id=flow.cgroup_id,
            container_id=self._container_of(flow.cgroup_id) if self._container_of and flow.cgroup_id else ""))
