"""Connection records from the kernel, decoded into ConnectionEvents.

The probes write `connection_records.RECORD` into an RecordChannel (ring
buffer or perf buffer) when a connection ends; this turns each into the
event the exporters print. Times arrive on the kernel's monotonic clock and
leave as wall-clock seconds. Records the kernel could not deliver are counted
by the channel's reader and reported as `records_lost_total`.
"""

from __future__ import annotations

import functools
import socket
import time
from typing import Callable, Optional

from ..bpf.channel import RecordChannel
from ..figures import ConnectionEvent
from ..probes.connection_records import AF_INET6, RECORD
from ..probes.record_codec import RecordCodec
from ..probes.tcp_metrics import failure_reason
from ..vocabulary import FAILED, OUTCOMES, RESET, RESET_DIRECTIONS, ROLES, name_of
from .containers import Cgroups


def wall_clock_offset() -> float:
    """Seconds to add to a CLOCK_MONOTONIC reading (ktime_get_ns) to get wall-clock time."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


@functools.lru_cache(maxsize=4096)
def _address(family: int, raw: bytes) -> str:
    """An address as text; cached, since a busy host's records repeat a few peers."""
    if family == AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


@functools.lru_cache(maxsize=1024)
def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _reason(outcome: int, code: int) -> str:
    if outcome == RESET:
        return name_of(RESET_DIRECTIONS, code, "direction")
    if outcome == FAILED:
        return failure_reason(code)
    return ""


_CODEC = RecordCodec(RECORD)


def decode(data: bytes, clock_offset: float, cgroups: Optional[Cgroups] = None,
           drop_reason: Callable[[int], str] = str) -> ConnectionEvent:
    """One record as an event; `clock_offset` from `wall_clock_offset()`.

    Trace mode decodes every record, so this is a hot path: the record parses
    with struct into a named tuple, and the text that repeats (addresses,
    process names, container ids) comes from caches.
    """
    r = _CODEC.parse_from(data)
    outcome, cgroup_id = r.outcome, r.cgroup_id
    return ConnectionEvent(
        timestamp=r.end_ns / 1e9 + clock_offset,
        protocol="tcp",
        role=name_of(ROLES, r.role, "role"),
        outcome=name_of(OUTCOMES, outcome, "outcome"),
        reason=_reason(outcome, r.reason),
        pid=r.pid,
        comm=_comm(r.comm),
        local_address=_address(r.family, r.local_address),
        local_port=r.local_port,
        remote_address=_address(r.family, r.remote_address),
        remote_port=socket.ntohs(r.remote_port),
        bytes_sent=r.bytes_sent,
        bytes_received=r.bytes_received,
        duration_seconds=r.duration_ns / 1e9,
        rtt_seconds=None if outcome == FAILED else r.srtt_us / 1e6,
        retransmits=r.retransmits,
        cgroup_id=cgroup_id,
        container_id=cgroups.container_id(cgroup_id) if cgroups is not None and cgroup_id else "",
        preexisting=bool(r.preexisting),
        drops=r.drops,
        drop_reason=drop_reason(r.drop_reason) if r.drops else "",
    )


class ConnectionRecords:
    """The events arriving on one channel, decoded."""

    def __init__(self, channel: RecordChannel, cgroups: Optional[Cgroups] = None,
                 drop_reason: Callable[[int], str] = str):
        self.channel = channel
        self._cgroups = cgroups if cgroups is not None else Cgroups()
        self._drop_reason = drop_reason

    @property
    def lost(self) -> int:
        return self.channel.reader.lost

    def read(self, timeout: float) -> list[ConnectionEvent]:
        """The events waiting now; if none, those arriving within `timeout` seconds."""
        raw = self.channel.reader.read(int(timeout * 1000) if timeout > 0 else 0)
        offset = wall_clock_offset()
        return [decode(data, offset, self._cgroups, self._drop_reason) for data in raw]
