"""What probes' readers produce: metric declarations, their values, and the ends of connections.

The one data model between the probes, the collector and the exporters, low in
the stack so that a probe can declare its metrics and read them back without
importing anything above it. Values are in base units (bytes, seconds), and a
metric's name carries its unit. Counters are cumulative since gespann started
and never go down; a gauge is the value now; a histogram has per-bucket counts
plus the exact sum, so a mean is `sum / count`, never a running average.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union


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


class ConnectionEvent(NamedTuple):
    """The end of one connection (or one failed attempt, or one idle-expired UDP flow), as trace prints it.

    Addresses are text (IPv4, IPv6, or v4-mapped IPv6 as the socket had it).
    `outcome` is close, reset or failed; `reason` is the reset direction
    (sent, received) or the failure cause (refused, timeout, host_unreachable,
    network_unreachable, or an errno name); empty for a close.

    A named tuple, not a dataclass: trace mode makes one per record, at tens of
    thousands a second, and a tuple is made in a fraction of a frozen
    dataclass's time. Its fields are in the order of the JSON line's keys.
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
    #: Its packets the kernel dropped (TCP, where dropped packets are counted), and the kernel's reason for the latest.
    drops: int = 0
    drop_reason: str = ""
    #: Where a destination NAT (a Service's virtual IP) sent it: the backend that answered, refused or reset
    #: (the remote address is what the application dialed). Empty where no translation was seen (TCP, with
    #: labels.peers on, where conntrack's types can be read).
    backend_address: str = ""
    backend_port: int = 0


#: Metric (its MetricSpec, or its name) -> its series: what a probe's reader returns at each collection.
#: The collector checks every metric and label name against what the probe declares.
Series = dict[Union[str, "MetricSpec"], dict[Labels, Value]]

#: Units a metric's name may end with (before `_total`): the unit is in the name, as Prometheus asks.
UNITS = ("seconds", "bytes", "")


@dataclass(frozen=True)
class MetricSpec:
    """A metric as declared: its name (unit included), kind, label names, meaning and unit.

    `dogstatsd` is its name in DogStatsD, after the prefix (dots, no `_total`: DataDog counts are
    increments); by default the name without `_total`.
    """

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    unit: str = ""
    dogstatsd: str = ""

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name}: unit {self.unit!r} is not one of {UNITS}")
        stem = self.name[:-len("_total")] if self.name.endswith("_total") else self.name
        if self.unit and not stem.endswith(f"_{self.unit}") and stem != self.unit:
            raise ValueError(f"metric {self.name} is in {self.unit}: its name must end with _{self.unit}")
        if (self.kind is Kind.COUNTER) != self.name.endswith("_total"):
            raise ValueError(f"metric {self.name}: counters, and only counters, end with _total")
        if not self.dogstatsd:
            object.__setattr__(self, "dogstatsd", stem)

    def series(self, **values: str) -> Labels:
        """One series' labels, by the declared names: `SPEC.series(role="client")`. A name not declared, or
        one missing, is an error here, where the reader makes it, not a silent gap on the page."""
        if values.keys() != set(self.labels):
            raise UndeclaredSeries(f"metric {self.name} declares labels {self.labels}, not {tuple(sorted(values))}")
        return labels(**values)


class UndeclaredSeries(ValueError):
    """A reader returned a metric, or labels, its probe does not declare."""


def counter(name: str, labels: tuple[str, ...], help: str, unit: str = "", dogstatsd: str = "") -> MetricSpec:
    return MetricSpec(name, Kind.COUNTER, labels, help, unit, dogstatsd)


def gauge(name: str, labels: tuple[str, ...], help: str, unit: str = "", dogstatsd: str = "") -> MetricSpec:
    return MetricSpec(name, Kind.GAUGE, labels, help, unit, dogstatsd)


def histogram(name: str, labels: tuple[str, ...], help: str, unit: str = "seconds",
              dogstatsd: str = "") -> MetricSpec:
    return MetricSpec(name, Kind.HISTOGRAM, labels, help, unit, dogstatsd)
