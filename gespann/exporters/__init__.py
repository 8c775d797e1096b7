"""Exporters: each turns the collector's snapshots or events into one wire format.

Each exporter module declares its kind (`KIND`, see kinds.py) and is registered
here, once: the config validates `exporters:` from these kinds, `gespann run`
builds one exporter per configured one (`build_exporters`), and asks them
whether connection events are wanted (`wants_events`). When DataDog and
Prometheus both run, Prometheus also exposes what DataDog could not send
(`gespann_datadog_unsent_total`).

The datadog package (and the HTTP client it brings) adds a third to gespann's
memory, which a Prometheus-only sidecar should not carry: it is imported when a
DataDog exporter is built (dogstatsd.py), not when its kind is registered.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from gespann.collector import Collector

from . import datadog, jsonl, prometheus
from .base import Exporter, ExporterError, SelfMetricSource
from .datadog import DogStatsdExporter
from .events import json_line, json_object, table_header, table_line
from .jsonl import JsonlExporter
from .kinds import BuildContext, ExporterConfig, ExporterKind, Registry, Setting
from .prometheus import PrometheusExporter, SnapshotFamilies

__all__ = ["KINDS", "BuildContext", "DogStatsdExporter", "Exporter", "ExporterConfig", "ExporterError",
           "ExporterKind", "JsonlExporter", "PrometheusExporter", "SelfMetricSource", "Setting",
           "SnapshotFamilies", "build_exporters", "json_line", "json_object", "table_header", "table_line",
           "wants_events"]

#: Every exporter kind, by type name; the config lists them in this order.
KINDS = Registry()
KINDS.register(prometheus.KIND)
KINDS.register(datadog.KIND)
KINDS.register(jsonl.KIND)


def build_exporters(configured: Sequence[ExporterConfig], collector: Collector) -> list[Exporter]:
    """One exporter per configured one, in config order; none is started yet."""
    return KINDS.build(configured, collector)


def wants_events(configured: Iterable[ExporterConfig]) -> bool:
    """Whether any configured exporter consumes connection events (the probes then send records)."""
    return KINDS.consume_events(configured)
