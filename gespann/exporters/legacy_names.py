"""The original gespann's Prometheus metric names, derived from the catalogue with correct semantics.

The original re-added cumulative totals on every tick and kept averages as
`(avg + x) / 2`. Here every value is recomputed from one collector snapshot at
scrape time: a counter is the collector's cumulative count since gespann
started (monotonic and exact), and an average is the true mean since start,
`sum / count` of the catalogue histogram. With no observations yet the mean is
NaN: undefined, not zero.

| original name                            | type    | derived from (catalogue)                                   |
|------------------------------------------|---------|------------------------------------------------------------|
| gespann_open_connections                 | gauge   | connections_open, summed over protocol                     |
| gespann_closed_connections_total         | counter | connections_closed_total, summed                           |
| gespann_reset_connections_total          | counter | connections_reset_total, summed over direction             |
| gespann_failed_connections_total         | counter | connections_failed_total, summed over reason               |
| gespann_idle_connections                 | gauge   | connections_idle, summed over protocol                     |
| gespann_total_connections                | untyped | connections_opened_total, summed                           |
| gespann_bytes_sent_total                 | counter | bytes_total{direction="sent"}, summed over protocol        |
| gespann_bytes_received_total             | counter | bytes_total{direction="received"}, summed over protocol    |
| gespann_avg_connection_duration_ms       | gauge   | connection_duration_seconds sum/count (all protocols) x1e3 |
| gespann_avg_rtt_microseconds             | gauge   | rtt_seconds sum/count x1e6                                 |
| gespann_connection_bandwidth_bytes_total | counter | bytes_total, labels {direction, protocol}                  |
| gespann_tcp_connections_total            | counter | connections_opened_total{protocol="tcp"}, summed over role |
| gespann_udp_connections_total            | counter | connections_opened_total{protocol="udp"}, summed over role |
| gespann_connection_events_total          | counter | {event_type, protocol, reset_reason}:                      |
|                                          |         |   open   <- connections_opened_total by protocol           |
|                                          |         |   close  <- connections_closed_total by protocol           |
|                                          |         |   reset  <- connections_reset_total, reset_reason=direction |
|                                          |         |   failed <- connections_failed_total, reset_reason=reason  |

Why `gespann_total_connections` is untyped: a Prometheus counter's sample name
must end in `_total`, so prometheus-client exposes a counter family called
`gespann_total_connections` as `gespann_total_connections_total`. The original
name is kept exactly by exposing it as an untyped (OpenMetrics: unknown)
family. Its value is still a monotonic count, so `rate()` works on it; new
dashboards should use the typed `gespann_connections_opened_total`.

`reset_reason` is the original's only reason label, so failed events carry
their failure reason there too; it is empty for open and close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Union

from gespann.collector import Histogram, Kind, Labels, Snapshot, labels

#: The kind of `gespann_total_connections`; the collector model has no such kind.
UNTYPED = "untyped"

Samples = dict[Labels, float]


@dataclass(frozen=True)
class Sum:
    """A catalogue counter or gauge, filtered by `where`, summed over every label not kept.

    `keep` maps an output label to the catalogue label it copies; `fixed` adds labels with constant values.
    """

    metric: str
    where: Mapping[str, str] = field(default_factory=dict)
    keep: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(sorted({*self.keep, *self.fixed}))

    def samples(self, snapshot: Snapshot) -> Samples:
        totals: Samples = {}
        found = snapshot.metrics.get(self.metric)
        for series, value in (found.series.items() if found else ()):
            pairs = dict(series)
            if any(pairs.get(name) != wanted for name, wanted in self.where.items()):
                continue
            key = labels(**self.fixed, **{out: pairs.get(source, "") for out, source in self.keep.items()})
            totals[key] = totals.get(key, 0) + value
        if not totals and not self.keep:
            totals[labels(**self.fixed)] = 0  # an unlabelled total exists even before its first event
        return totals


@dataclass(frozen=True)
class Mean:
    """The true mean of a catalogue histogram, all series merged, times `scale` (a unit change)."""

    metric: str
    scale: float

    @property
    def label_names(self) -> tuple[str, ...]:
        return ()

    def samples(self, snapshot: Snapshot) -> Samples:
        found = snapshot.metrics.get(self.metric)
        histograms: list[Histogram] = list(found.series.values()) if found else []
        count = sum(h.count for h in histograms)
        mean = sum(h.sum for h in histograms) / count * self.scale if count else math.nan
        return {(): mean}


Part = Union[Sum, Mean]


@dataclass(frozen=True)
class LegacyMetric:
    name: str
    kind: Union[Kind, str]  # Kind.COUNTER, Kind.GAUGE or UNTYPED
    help: str
    parts: tuple[Part, ...]

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.parts[0].label_names

    def samples(self, snapshot: Snapshot) -> Samples:
        merged: Samples = {}
        for part in self.parts:
            merged.update(part.samples(snapshot))
        return merged


C, G = Kind.COUNTER, Kind.GAUGE

LEGACY_METRICS: tuple[LegacyMetric, ...] = (
    LegacyMetric("gespann_open_connections", G, "Connections open now (TCP and UDP).",
                   (Sum("connections_open"),)),
    LegacyMetric("gespann_closed_connections_total", C, "Connections that ended in an orderly way, since start.",
                   (Sum("connections_closed_total"),)),
    LegacyMetric("gespann_reset_connections_total", C, "TCP connections ended by a reset, since start.",
                   (Sum("connections_reset_total"),)),
    LegacyMetric("gespann_failed_connections_total", C, "TCP active opens that never connected, since start.",
                   (Sum("connections_failed_total"),)),
    LegacyMetric("gespann_idle_connections", G, "Open connections idle for longer than idle_timeout.",
                   (Sum("connections_idle"),)),
    LegacyMetric("gespann_total_connections", UNTYPED,
                   "Connections seen since start (a monotonic count; untyped only to keep this exact name).",
                   (Sum("connections_opened_total"),)),
    LegacyMetric("gespann_bytes_sent_total", C, "Payload bytes sent, since start.",
                   (Sum("bytes_total", where={"direction": "sent"}),)),
    LegacyMetric("gespann_bytes_received_total", C, "Payload bytes received, since start.",
                   (Sum("bytes_total", where={"direction": "received"}),)),
    LegacyMetric("gespann_avg_connection_duration_ms", G,
                   "Mean connection duration in milliseconds since start (sum/count; NaN before the first).",
                   (Mean("connection_duration_seconds", 1e3),)),
    LegacyMetric("gespann_avg_rtt_microseconds", G,
                   "Mean smoothed TCP RTT in microseconds since start (sum/count; NaN before the first).",
                   (Mean("rtt_seconds", 1e6),)),
    LegacyMetric("gespann_connection_bandwidth_bytes_total", C, "Payload bytes by direction and protocol.",
                   (Sum("bytes_total", keep={"direction": "direction", "protocol": "protocol"}),)),
    LegacyMetric("gespann_tcp_connections_total", C, "TCP connections seen since start (both roles).",
                   (Sum("connections_opened_total", where={"protocol": "tcp"}),)),
    LegacyMetric("gespann_udp_connections_total", C, "UDP flows seen since start.",
                   (Sum("connections_opened_total", where={"protocol": "udp"}),)),
    LegacyMetric("gespann_connection_events_total", C,
                   "Connection events since start; reset_reason is the reset direction or the failure reason.",
                   (Sum("connections_opened_total", keep={"protocol": "protocol"},
                        fixed={"event_type": "open", "reset_reason": ""}),
                    Sum("connections_closed_total", keep={"protocol": "protocol"},
                        fixed={"event_type": "close", "reset_reason": ""}),
                    Sum("connections_reset_total", keep={"reset_reason": "direction"},
                        fixed={"event_type": "reset", "protocol": "tcp"}),
                    Sum("connections_failed_total", keep={"reset_reason": "reason"},
                        fixed={"event_type": "failed", "protocol": "tcp"}))),
)
