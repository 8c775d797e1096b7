"""Prometheus exposition: each scrape renders one collector snapshot; nothing is kept between scrapes.

Exposed families:
- the original gespann's names, derived with correct semantics (see `legacy_names.py` for the table);
- every catalogue metric as `gespann_<name>` with its labels (histograms in seconds);
- self-metrics of other exporters (`gespann_datadog_unsent_total`), when they run;
- the conventional `process_*` families for gespann's own CPU, memory and file descriptors.

The page is written in the text format by `exposition.py` and served by
`page_server.py`, over plain HTTP, or over TLS with optional client
certificates (tls.py).
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Iterator, Optional, Sequence

from gespann.collector import Collector
from gespann.settings import port, readable_file, text

from . import legacy_names, tls
from .base import ExporterError, SelfMetricSource
from .exposition import CONTENT_TYPE, Family, render
from .kinds import BuildContext, ExporterKind, Setting
from .page_server import PageServer
from .process_metrics import ProcessMetrics
from .tls import TlsFiles

log = logging.getLogger(__name__)

PREFIX = "gespann_"


class SnapshotFamilies:
    """Turns `Collector.snapshot()` into metric families at scrape time: no per-scrape state, nothing re-added.

    `self_metric_sources` is read at each scrape, not copied: exporters built after this one join it.
    """

    def __init__(self, source: Collector, self_metric_sources: Sequence[SelfMetricSource] = ()):
        self._source = source
        self._self_metric_sources = self_metric_sources
        self._process = ProcessMetrics()

    def families(self) -> Iterator[Family]:
        snapshot = self._source.snapshot()
        for metric in legacy_names.LEGACY_METRICS:
            yield Family(metric.name, metric.kind, metric.help, metric.samples(snapshot), metric.label_names)
        for metric in snapshot.metrics.values():
            yield Family(PREFIX + metric.name, metric.kind, metric.help, metric.series, metric.label_names)
        for source in self._self_metric_sources:
            for metric in source.self_metrics():
                yield Family(PREFIX + metric.name, metric.kind, metric.help, metric.series)
        yield from self._process.families()

    def page(self) -> bytes:
        return render(self.families())


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
        self.families = SnapshotFamilies(collector, self_metric_sources)
        self._server: Optional[PageServer] = None

    def start(self) -> None:
        wrap = None
        if self.tls is not None:
            try:
                context = self.tls.server_context()
            except OSError as err:  # an ssl.SSLError too; the config check loaded them, they changed since
                raise ExporterError(f"prometheus: cannot load the TLS files: {err}") from None

            def wrap(listening: socket.socket) -> socket.socket:
                """Each handshake waits for its connection's first read, in that connection's own thread:
                a client that connects and sends nothing holds up no one else."""
                return context.wrap_socket(listening, server_side=True, do_handshake_on_connect=False)

        try:
            self._server = PageServer(self.address, self.port, self.path, self.families.page, CONTENT_TYPE, wrap)
        except OSError as err:
            raise ExporterError(self._bind_problem(err)) from None
        self.port = self._server.port  # the real one when 0 asked for any free port
        self._server.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

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
