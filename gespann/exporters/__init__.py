"""Exporters: each turns the collector's snapshots or events into one wire format.

`build_exporters(config.adapters, collector)` gives one exporter per configured
adapter, in order; `gespann run` starts them, prints `describe()` for each, and
closes them on the way out. When DataDog and Prometheus both run, Prometheus
also exposes what DataDog could not send (`gespann_datadog_unsent_total`).

The DataDog exporter is imported only when an adapter asks for it: the
datadog package (and the HTTP client it brings) adds a third to gespann's
memory, which a Prometheus-only sidecar should not carry.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

from gespann.collector import Collector
from gespann.config import Adapter

from .adapter import Exporter, ExporterError, SelfMetricSource
from .events import json_line, json_object, table_header, table_line
from .jsonl import JsonlExporter
from .prometheus import PrometheusExporter, SnapshotCollector

__all__ = ["DogStatsdExporter", "Exporter", "ExporterError", "JsonlExporter", "PrometheusExporter",
           "SelfMetricSource", "SnapshotCollector", "build_exporters", "json_line", "json_object",
           "table_header", "table_line"]

if TYPE_CHECKING:
    from .datadog import DogStatsdExporter


def __getattr__(name: str):
    if name == "DogStatsdExporter":
        from .datadog import DogStatsdExporter

        return DogStatsdExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: The DataDog agent when the config names none: DataDog's own variables, then its default.
DEFAULT_AGENT_HOST = "localhost"
DEFAULT_AGENT_PORT = 8125


def build_exporters(adapters: Sequence[Adapter], collector: Collector) -> list[Exporter]:
    """One exporter per adapter, in config order; none is started yet."""
    built: dict[int, Exporter] = {}
    for index, adapter in enumerate(adapters):
        if adapter.type == "datadog":
            built[index] = _datadog(adapter.settings, collector)
        elif adapter.type == "jsonl":
            built[index] = JsonlExporter(collector, adapter.settings["path"])
    self_metric_sources = [exporter for exporter in built.values() if isinstance(exporter, SelfMetricSource)]
    for index, adapter in enumerate(adapters):
        if adapter.type == "prometheus":
            built[index] = PrometheusExporter(
                collector,
                address=adapter.settings.get("address", "0.0.0.0"),
                port=adapter.settings.get("port", 8080),
                path=adapter.settings.get("path", "/metrics"),
                self_metric_sources=self_metric_sources,
            )
    unknown = [adapter.type for index, adapter in enumerate(adapters) if index not in built]
    if unknown:
        raise ExporterError(f"no exporter for adapter type {unknown[0]!r}")
    return [built[index] for index in range(len(adapters))]


def _datadog(settings: Mapping[str, Any], collector: Collector) -> DogStatsdExporter:
    from .datadog import DogStatsdExporter

    host, port = _agent_address(settings.get("host"))
    return DogStatsdExporter(
        collector,
        host=host,
        port=port,
        prefix=settings.get("prefix", "gespann"),
        tags=_tag_list(settings.get("tags") or ()),
        interval=float(settings.get("flush_interval", 10.0)),
    )


def _agent_address(configured: Union[str, None]) -> tuple[str, int]:
    """`host:port` from the config, else DD_AGENT_HOST / DD_DOGSTATSD_PORT (as a DataDog sidecar is told)."""
    if configured is None:
        return (os.environ.get("DD_AGENT_HOST") or DEFAULT_AGENT_HOST,
                int(os.environ.get("DD_DOGSTATSD_PORT") or DEFAULT_AGENT_PORT))
    host, _, port = configured.rpartition(":")
    return host.strip("[]"), int(port)


def _tag_list(tags: Union[Iterable[str], Mapping[str, Any]]) -> list[str]:
    """Tags as configured, either `["env:prod", ...]` or `{env: prod, ...}`."""
    if isinstance(tags, Mapping):
        return [f"{key}:{value}" for key, value in tags.items()]
    if isinstance(tags, str):
        return [tags]
    return [str(tag) for tag in tags]
