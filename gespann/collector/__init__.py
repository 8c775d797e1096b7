"""The collector: connections, as aggregated in the kernel and read back by each probe's reader, for the
exporters."""

from ..figures import MetricSpec
from .catalogue import BY_NAME, CATALOGUE, OWN_METRICS, catalogue
from .model import Collector, ConnectionEvent, Histogram, Kind, Labels, Metric, Snapshot, labels

__all__ = ["BY_NAME", "CATALOGUE", "OWN_METRICS", "Collector", "ConnectionEvent", "Histogram", "Kind", "Labels",
           "Metric", "MetricSpec", "Snapshot", "catalogue", "labels"]
