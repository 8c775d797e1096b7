"""The collector: connections, as aggregated in the kernel and read back, for the exporters."""

from .catalogue import BY_NAME, CATALOGUE, MetricSpec
from .model import Collector, ConnectionEvent, Histogram, Kind, Labels, Metric, Snapshot, labels

__all__ = ["BY_NAME", "CATALOGUE", "Collector", "ConnectionEvent", "Histogram", "Kind", "Labels", "Metric",
           "MetricSpec", "Snapshot", "labels"]
