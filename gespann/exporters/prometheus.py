"""Prometheus exposition: each scrape renders one collector snapshot; nothing is kept between scrapes.

Exposed families:
- the original gespann's names, derived with correct semantics (see `legacy_names.py` for the table);
- every catalogue metric as `gespann_<name>` with its labels (histograms in seconds);
- self-metrics of other exporters (`gespann_datadog_unsent_total`), when they run;
- prometheus-client's `process_*` metrics for gespann's own CPU and memory.

Served over plain HTTP, or over TLS with optional client certificates (tls.py).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import sys
import threading
from socketserver import ThreadingMixIn
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                    UnknownMetricFamily)
from prometheus_client.registry import Collector as PrometheusCollector
from prometheus_client.utils import floatToGoString

from gespann.collector import Collector, Histogram, Kind, Labels
from gespann.collector.model import Value
from gespann.settings import port, readable_file, text

from . import legacy_names, tls
from .base import ExporterError, SelfMetricSource
from .kinds import BuildContext, ExporterKind, Setting
from .tls import TlsFiles

log = logging.getLogger(__name__)

PREFIX = "gespann_"

#: How often the idle server checks for close(): bounds how long close() takes.
SHUTDOWN_POLL_SECONDS = 0.1


class SnapshotCollector(PrometheusCollector):
    """Turns `Collector.snapshot()` into metric families at scrape time: no per-tick state, nothing re-added.

    `self_metric_sources` is read at each scrape, not copied: exporters built after this one join it.
    """

    def __init__(self, source: Collector, self_metric_sources: Sequence[SelfMetricSource] = ()):
        self._source = source
        self._self_metric_sources = self_metric_sources

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source.snapshot()
        for metric in legacy_names.LEGACY_METRICS:
            yield _family(metric.name, metric.kind, metric.help, metric.label_names, metric.samples(snapshot))
        for metric in snapshot.metrics.values():
            yield _family(PREFIX + metric.name, metric.kind, metric.help, metric.label_names, metric.series)
        for source in self._self_metric_sources:
            for metric in source.self_metrics():
                yield _family(PREFIX + metric.name, metric.kind, metric.help, (), metric.series)

    def describe(self) -> list[Metric]:
        """No families up front: describing would take a snapshot at registration for nothing."""
        return []


def _family(name: str, kind: Union[Kind, str], help: str, label_names: Sequence[str],
            series: Mapping[Labels, Value]) -> Metric:
    """A prometheus-client family from series keyed by model Labels; labels beyond `label_names` pass through."""
    extra = sorted({label for key in series for label, _ in key} - set(label_names))
    names = [*label_names, *extra]
    if kind is Kind.COUNTER:
        family = CounterMetricFamily(name, help, labels=names)
    elif kind is Kind.GAUGE:
        family = GaugeMetricFamily(name, help, labels=names)
    elif kind is Kind.HISTOGRAM:
        family = HistogramMetricFamily(name, help, labels=names)
    else:
        family = UnknownMetricFamily(name, help, labels=names)
    for key, value in sorted(series.items()):
        values = _values(key, names)
        if isinstance(value, Histogram):
            buckets = [(floatToGoString(bound), count) for bound, count in value.cumulative()]
            family.add_metric(values, buckets, value.sum)
        else:
            family.add_metric(values, value)
    return family


def _values(key: Labels, names: Sequence[str]) -> list[str]:
    pairs = dict(key)
    return [pairs.get(name, "") for name in names]


class PrometheusExporter:
    """Serves the metrics page on one address, port and path, from a thread; `close()` stops it cleanly.

    With `tls`, only over TLS, and only to clients with a certificate when it names a client CA.
    """

    def __init__(self, collector: Collector, *, address: str = "0.0.0.0", port: int = 8080,
                 path: str = "/metrics", self_metric_sources: Sequence[SelfMetricSource] = (),
                 tls: Optional[TlsFiles] = None):
        self.address = address
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.tls = tls
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(collector, self_metric_sources))
        self.registry.register(ProcessCollector(registry=None))
        self._server: Optional[WSGIServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        app = _only_at(self.path, make_wsgi_app(self.registry))
        try:
            server_class = _server_class(self.address, self.port)
            self._server = make_server(self.address, self.port, app, server_class, _QuietHandler)
        except OSError as err:
            raise ExporterError(self._bind_problem(err)) from None
        if self.tls is not None:
            self._serve_tls()
        self.port = self._server.server_address[1]  # the real one when 0 asked for any free port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,),
                                        name="gespann-prometheus", daemon=True)
        self._thread.start()

    def _serve_tls(self) -> None:
        """The listening socket wrapped as prometheus-client wraps it, except that each handshake runs in its
        request's thread, on the first read: a client that connects and sends nothing holds up no one else."""
        try:
            context = self.tls.server_context()
        except (ssl.SSLError, OSError) as err:  # the config check loaded them; they changed since
            self._server.server_close()
            raise ExporterError(f"prometheus: cannot load the TLS files: {err}") from None
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def describe(self) -> str:
        return f"prometheus {self.url}"

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://{host}:{self.port}{self.path}"

    def _bind_problem(self, err: OSError) -> str:
        where = f"{self.address}:{self.port}"
        if err.errno == errno.EADDRINUSE:
            return f"prometheus: port {self.port} is already in use ({where}); choose another port in the config"
        if isinstance(err, socket.gaierror):
            return f"prometheus: cannot resolve address {self.address!r}: {err.strerror}"
        return f"prometheus: cannot listen on {where}: {err.strerror or err}"


def _only_at(path: str, app):
    """The metrics app at exactly `path`; every other path is a 404 that says where the metrics are."""

    def routed(environ, start_response) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == path:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"gespann serves metrics at {path}\n".encode()]

    return routed


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a slow scraper never holds up another."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client refused in the TLS handshake, or gone mid-request, is one debug line, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError)):
            log.debug("prometheus: request from %s failed: %s", client_address[0], error)
        else:
            super().handle_error(request, client_address)


class _ThreadedServerV6(_ThreadedServer):
    address_family = socket.AF_INET6


def _server_class(address: str, port: int) -> type:
    """The server class for the address family of `address`."""
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return _ThreadedServerV6 if family == socket.AF_INET6 else _ThreadedServer


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format, *args) -> None:
        pass


def _build(settings, context: BuildContext) -> PrometheusExporter:
    return PrometheusExporter(context.collector, address=settings["address"], port=settings["port"],
                              path=settings["path"], self_metric_sources=context.self_metric_sources,
                              tls=tls.from_settings(settings))


KIND = ExporterKind("prometheus", "the metrics page Prometheus scrapes", settings=(
    Setting("port", port, "the port to listen on", 8080),
    Setting("address", text("an address to listen on, e.g. 0.0.0.0 or ::"), "the address to listen on", "0.0.0.0"),
    Setting("path", text("a URL path, e.g. /metrics"), "the URL path of the metrics page", "/metrics"),
    Setting(tls.CERT_FILE, readable_file("a PEM file path"),
            "the server certificate (PEM, chain after it); with key_file, the page is served over TLS only"),
    Setting(tls.KEY_FILE, readable_file("a PEM file path"), "the private key of cert_file (PEM, unencrypted)"),
    Setting(tls.CLIENT_CA_FILE, readable_file("a PEM file path"),
            "the CA (PEM) that clients' certificates must chain to; with it, a client without one is refused"),
), build=_build, check_together=tls.check_settings)
