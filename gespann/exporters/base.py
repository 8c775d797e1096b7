"""What `gespann run` needs from every exporter, whatever wire format it speaks."""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

from gespann.collector import Metric


class ExporterError(Exception):
    """An exporter cannot do its job (a port already taken, a file not writable); the message says what to fix."""


class Exporter(Protocol):
    def start(self) -> None:
        """Begin serving or sending; raises ExporterError when that is impossible."""

    def close(self) -> None:
        """Stop, after a final flush of whatever is still buffered."""

    def describe(self) -> str:
        """One line for the start-up summary, e.g. `prometheus http://0.0.0.0:8080/metrics`."""


@runtime_checkable
class SelfMetricSource(Protocol):
    """An exporter that counts its own trouble (lines it could not send), so that another exporter can show it."""

    def self_metrics(self) -> Iterable[Metric]:
        """Metrics in the collector's model, named without the `gespann_` prefix."""
