"""What the collector hands the exporters: snapshots of metrics and a stream of connection events.

This is the one interface between knowing connections (the collector) and
knowing wire formats (the exporters). Values are in base units (bytes,
seconds); names carry the unit. Counters are cumulative since gespann started
and never go down; a gauge is the value now; a histogram has per-bucket counts
plus the exact sum, so a mean is `sum / count`, never a running average.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Protocol, Union


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Histogram:
    """Observations in buckets: `counts[i]` fell at or below `bounds[i]` and above `bounds[i-1]`;
    the last count is above every bound (+Inf). `sum` is the exact sum of the observations."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    def __post_init__(self):
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(f"{len(self.bounds)} bounds need {len(self.bounds) + 1} counts, not {len(self.counts)}")
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError("histogram bounds must ascend")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count): Prometheus' `le` buckets."""
        running, out = 0, []
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append((bound, running))
        return out

    def mean(self) -> Optional[float]:
        return self.sum / self.count if self.count else None


Value = Union[int, float, Histogram]
Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable and order-free


def labels(**pairs: str) -> Labels:
    return tuple(sorted((name, str(value)) for name, value in pairs.items()))


@dataclass(frozen=True)
class Metric:
    """One metric and all its series. `name` is a catalogue name (catalogue.py), unit included."""

    name: str
    kind: Kind
    help: str
    series: Mapping[Labels, Value] = field(default_factory=dict)

    def value(self, **pairs: str) -> Value:
        """The series with exactly these labels (0 for an absent counter or gauge series)."""
        found = self.series.get(labels(**pairs))
        if found is None:
            if self.kind is Kind.HISTOGRAM:
                raise KeyError(f"{self.name} has no series {pairs}")
            return 0
        return found

    def total(self) -> Union[int, float]:
        """Sum over every series (counters and gauges)."""
        if self.kind is Kind.HISTOGRAM:
            raise TypeError(f"{self.name} is a histogram: merge its series instead")
        return sum(self.series.values())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Snapshot:
    """Every metric as of one collection. `timestamp` is wall-clock seconds (time.time())."""

    timestamp: float
    metrics: Mapping[str, Metric]

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]


@dataclass(frozen=True)
class ConnectionEvent:
    """The end of one connection (or one failed attempt, or one idle-expired UDP flow), as trace prints it.

    Addresses are text (IPv4, IPv6, or v4-mapped IPv6 as the socket had it).
    `outcome` is close, reset or failed; `reason` is the reset direction
    (sent, received) or the failure cause (refused, timeout, host_unreachable,
    network_unreachable, or an errno name); empty for a close.
    """

    timestamp: float
    protocol: str  # tcp | udp
    role: str  # client | server (udp: the side that sent first)
    outcome: str  # close | reset | failed
    reason: str
    pid: int
    comm: str
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    bytes_sent: int
    bytes_received: int
    duration_seconds: float
    rtt_seconds: Optional[float] = None  # smoothed RTT at the end; None for udp
    retransmits: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    cgroup_id: int = 0
    container_id: str = ""
    #: Open before gespann started: its bytes and duration are those since the start.
    preexisting: bool = False


class Collector(Protocol):
    """What every exporter reads."""

    def snapshot(self) -> Snapshot:
        """Metrics as of now; cheap enough to call on every scrape."""

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        """Connection events that arrived since the last call, waiting up to `timeout` seconds for one."""
