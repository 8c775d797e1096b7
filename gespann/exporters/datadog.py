"""DogStatsD export: every flush sends gauges as values, counters as increments since the last flush.

Histograms go out the way DataDog's own OpenMetrics check maps a Prometheus
histogram, as counts only:

    <name>.count                  observations since the last flush      (c)
    <name>.sum                    their exact sum, in seconds             (c)
    <name>.bucket{upper_bound:B}  observations <= B since the last flush  (c; no +Inf bucket: that is .count)

Every number sent is exact, a mean is `.sum / .count` over any window, and
`.bucket` answers "how many under B". gespann does not send DogStatsD
distributions: it has per-bucket counts, not the observations, so a
distribution would need invented sample values (bucket midpoints) whose avg,
sum, min and max would be false, and the +Inf bucket has no midpoint at all.
The limit: DataDog computes no percentiles from these counts. Where percentiles
are needed, scrape gespann's Prometheus endpoint with the OpenMetrics check and
`histogram_buckets_as_distributions`, which interpolates within buckets
knowingly, with the same metric names.

Names: `<prefix>.<name>`, prefix `gespann` unless configured, name as the catalogue declares it
(`MetricSpec.dogstatsd`: dots, and counters without `_total`, since DataDog counts are increments).
Tags: every label as lowercase `key:value` (empty values left out), then the
configured tags, then DataDog's own (DD_ENV, DD_SERVICE, DD_VERSION,
DATADOG_TAGS), as the datadog package adds them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Optional

from gespann.collector import Collector, Histogram, Kind, Labels, Metric, Snapshot
from gespann.settings import host_port, seconds, string, tag_list

from .agent import AgentSocket, agent_address
from .deltas import CounterDeltas, Number
from .dogstatsd import LineFormatter
from .kinds import BuildContext, ExporterKind, Setting

log = logging.getLogger(__name__)

#: Largest datagram, in bytes: DataDog's advice for UDP, an Ethernet frame less the IP and UDP headers.
MAX_PAYLOAD = 1432


@dataclass(frozen=True)
class _Line:
    """One formatted value, and the counter baseline to commit once it has left."""

    text: Optional[str]  # None while DogStatsD is disabled (DD_DOGSTATSD_DISABLE)
    series: Optional[Hashable] = None
    value: Number = 0


class DogStatsdExporter:
    """Sends the collector's figures to a DogStatsD agent every `interval` seconds from a thread, and on close."""

    def __init__(self, collector: Collector, *, host: str = "localhost", port: int = 8125,
                 prefix: str = "gespann", tags: Iterable[str] = (), interval: float = 10.0):
        self.prefix = prefix
        self.interval = interval
        self._collector = collector
        self._formatter = LineFormatter(prefix, [tag.lower() for tag in tags])
        self._agent = AgentSocket(host, port)
        self._deltas = CounterDeltas()
        self._unsent = 0
        self._lock = threading.Lock()  # one flush at a time: the timer's, flush()'s or close()'s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._flush_periodically, name="gespann-datadog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self._agent.close()

    def describe(self) -> str:
        names = f"{self.prefix}.*" if self.prefix else "*"
        return f"datadog dogstatsd {self._agent.host}:{self._agent.port} every {self.interval:g}s as {names}"

    def flush(self) -> None:
        """Send what changed since the last flush; a line that cannot be sent is counted in `unsent()`."""
        with self._lock:
            lines = [line for line in self._lines(self._collector.snapshot()) if line.text]
            for packet in _packets(lines):
                if self._agent.send("\n".join(line.text for line in packet).encode("utf-8")):
                    for line in packet:
                        if line.series is not None:
                            self._deltas.commit(line.series, line.value)
                else:
                    self._unsent += len(packet)

    def unsent(self) -> int:
        """Metric lines (one value each) that could not be sent since start."""
        return self._unsent

    def self_metrics(self) -> Iterable[Metric]:
        return (Metric("datadog_unsent_total", Kind.COUNTER,
                       "DogStatsD metric lines gespann could not send to the DataDog agent.",
                       {(): self._unsent}),)

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # a bad snapshot must not end the flushing for good
                log.exception("datadog: flush failed; next try in %gs", self.interval)

    def _lines(self, snapshot: Snapshot) -> Iterator[_Line]:
        for metric in snapshot.metrics.values():
            name = metric.dogstatsd
            for labels, value in sorted(metric.series.items()):
                tags = _tags(labels)
                if isinstance(value, Histogram):
                    yield from self._histogram(name, value, tags)
                elif metric.kind is Kind.COUNTER:
                    yield self._count(name, value, tags)
                else:
                    yield _Line(self._formatter.gauge(name, value, tags))

    def _histogram(self, name: str, histogram: Histogram, tags: tuple[str, ...]) -> Iterator[_Line]:
        yield self._count(f"{name}.count", histogram.count, tags)
        yield self._count(f"{name}.sum", histogram.sum, tags)
        for bound, at_or_below in histogram.cumulative()[:-1]:
            yield self._count(f"{name}.bucket", at_or_below, (*tags, f"upper_bound:{float(bound)!r}"))

    def _count(self, name: str, cumulative: Number, tags: tuple[str, ...]) -> _Line:
        series = (name, tags)
        increment = self._deltas.delta(series, cumulative)
        return _Line(self._formatter.count(name, increment, tags), series, cumulative)


def _tags(labels: Labels) -> tuple[str, ...]:
    return tuple(f"{name}:{value}".lower() for name, value in labels if value != "")


def _packets(lines: list[_Line]) -> Iterator[list[_Line]]:
    """Lines joined by newlines into datagrams of at most MAX_PAYLOAD bytes (a longer line goes alone)."""
    packet: list[_Line] = []
    size = 0
    for line in lines:
        length = len(line.text.encode("utf-8")) + 1
        if packet and size + length > MAX_PAYLOAD:
            yield packet
            packet, size = [], 0
        packet.append(line)
        size += length
    if packet:
        yield packet


def _build(settings, context: BuildContext) -> DogStatsdExporter:
    host, port = agent_address(settings.get("host"))
    return DogStatsdExporter(context.collector, host=host, port=port, prefix=settings["prefix"],
                             tags=settings["tags"], interval=settings["flush_interval"])


KIND = ExporterKind("datadog", "DogStatsD to a DataDog agent; counts are sent as deltas per flush", settings=(
    Setting("host", host_port, "the agent's host:port; absent: DD_AGENT_HOST and DD_DOGSTATSD_PORT, "
                               "else localhost:8125"),
    Setting("prefix", string("a metric name prefix"), "prefix of every metric name", "gespann"),
    Setting("tags", tag_list, "tags on every metric, a list of 'key:value' or a mapping", ()),
    Setting("flush_interval", seconds, "seconds between flushes", 10.0),
), build=_build)
