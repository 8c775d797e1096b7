"""What the collector hands the exporters: snapshots of metrics and a stream of connection events.

This is the one interface between knowing connections (the collector) and
knowing wire formats (the exporters). The values and their rules are those of
`gespann.figures`, which the probes' readers produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Union

from ..figures import ConnectionEvent, Histogram, Kind, Labels, MetricSpec, Value, labels

__all__ = ["Collector", "ConnectionEvent", "Histogram", "Kind", "Labels", "Metric", "MetricSpec", "Snapshot", "Value",
           "labels"]


@dataclass(frozen=True)
class Metric:
    """One metric and all its series. `name` is a catalogue name (catalogue.py), unit included;
    `dogstatsd` its DogStatsD name (MetricSpec.dogstatsd), by default the name without `_total`."""

    name: str
    kind: Kind
    help: str
    series: Mapping[Labels, Value] = field(default_factory=dict)
    dogstatsd: str = ""
    #: The label names every series has (MetricSpec.labels); by default those of the series themselves.
    label_names: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.dogstatsd:
            object.__setattr__(self, "dogstatsd", self.name[:-len("_total")] if self.name.endswith("_total")
                               else self.name)
        if not self.label_names and self.series:
            object.__setattr__(self, "label_names", tuple(name for name, _ in next(iter(self.series))))

    @classmethod
    def of(cls, spec: MetricSpec, series: Mapping[Labels, Value]) -> "Metric":
        return cls(spec.name, spec.kind, spec.help, series, spec.dogstatsd, spec.labels)

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


class Collector(Protocol):
    """What every exporter reads."""

    def snapshot(self) -> Snapshot:
        """Metrics as of now; cheap enough to call on every scrape."""

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        """Connection events that arrived since the last call, waiting up to `timeout` seconds for one."""
