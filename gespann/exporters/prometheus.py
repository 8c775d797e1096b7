"""Prometheus exposition: each scrape renders one collector snapshot; nothing is kept between scrapes.

Exposed families:
- the original gespann's names, derived with correct semantics (see `legacy_names.py` for the table);
- every catalogue metric as `gespann_<name>` with its labels (histograms in seconds);
- self-metrics of other exporters (`gespann_datadog_unsent_total`), when they run;
- the conventional `process_*` families for gespann's own CPU, memory and file descriptors;
- what the page's own server refused, dropped and answered (`gespann_metrics_page_*`, page_metrics.py).

The page is written by `exposition.py`, in the text format or OpenMetrics as
the scraper asks, and served by `page_server.py` over plain HTTP or TLS, with
optional client certificates and basic auth configured as Prometheus'
exporters configure them (web_config.py).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterable, Iterator, Sequence
from typing import Callable, Optional

from gespann.collector import Collector, Metric
from gespann.settings import port, positive_int, readable_file, text

from . import legacy_names, tls, web_config
from .base import ExporterError, SelfMetricSource
from .exposition import Family, Format, negotiate, render
from .kinds import BuildContext, ExporterKind, Setting
from .page_metrics import page_metrics
from .page_server import DEFAULT_MAX_CONNECTIONS, PageServer
from .process_metrics import ProcessMetrics
from .tls import TlsFiles
from .web_config import WebConfig

log = logging.getLogger(__name__)

PREFIX = "gespann_"


class SnapshotFamilies:
    """Turns `Collector.snapshot()` into metric families at scrape time: no per-scrape state, nothing re-added.

    `self_metric_sources` is read at each scrape, not copied: exporters built after this one join it.
    """

    def __init__(self, source: Collector, self_metric_sources: Sequence[SelfMetricSource] = (),
                 own_metrics: Callable[[], Iterable[Metric]] = tuple):
        self._source = source
        self._self_metric_sources = self_metric_sources
        self._own_metrics = own_metrics
        self._process = ProcessMetrics()

    def families(self) -> Iterator[Family]:
        snapshot = self._source.snapshot()
        for metric in legacy_names.LEGACY_METRICS:
            yield Family(metric.name, metric.kind, metric.help, metric.samples(snapshot), metric.label_names)
        for metric in snapshot.metrics.values():
            yield Family(PREFIX + metric.name, metric.kind, metric.help, metric.series, metric.label_names)
        for metric in (*(m for source in self._self_metric_sources for m in source.self_metrics()),
                       *self._own_metrics()):
            yield Family(PREFIX + metric.name, metric.kind, metric.help, metric.series, metric.label_names)
        yield from self._process.families()

    def rendering(self) -> PageRendering:
        return PageRendering(self.families())


class PageRendering:
    """One snapshot's families, written in each format scrapers ask for, each at most once."""

    def __init__(self, families: Iterable[Family]):
        self._families = list(families)
        self._pages: dict[Format, bytes] = {}

    def answer(self, accept: str) -> tuple[str, bytes]:
        format = negotiate(accept)
        if format not in self._pages:
            self._pages[format] = render(self._families, format)
        return format.content_type, self._pages[format]


class PrometheusExporter:
    """Serves the metrics page on one address, port and path, from threads of its own; `close()` stops it.

    `web` says how: over TLS (and then only to clients with a certificate when it names a client CA), with
    basic auth; `tls` alone is the older way of giving TLS. At most `max_connections` are open at once.
    """

    def __init__(self, collector: Collector, *, address: str = "0.0.0.0", port: int = 8080,
                 path: str = "/metrics", self_metric_sources: Sequence[SelfMetricSource] = (),
                 tls: Optional[TlsFiles] = None, web: Optional[WebConfig] = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        self.address = address
        self.port = port
        self.path = path if path.startswith("/") else "/" + path
        self.web = web if web is not None else WebConfig(tls)
        self.tls = self.web.tls
        self.max_connections = max_connections
        self._server: Optional[PageServer] = None
        self.families = SnapshotFamilies(collector, self_metric_sources, self._page_metrics)

    def start(self) -> None:
        context = auth = None
        if self.tls is not None:
            try:
                context = self.tls.server_context()
            except OSError as err:  # an ssl.SSLError too; the config check loaded them, they changed since
                raise ExporterError(f"prometheus: cannot load the TLS files: {err}") from None
        if self.web.basic_auth_users:
            from .basic_auth import BasicAuth

            auth = BasicAuth(self.web.basic_auth_users)
        try:
            self._server = PageServer(self.address, self.port, self.path, self.families.rendering, tls=context,
                                      auth=auth, max_connections=self.max_connections)
        except OSError as err:
            raise ExporterError(self._bind_problem(err)) from None
        self.port = self._server.port  # the real one when 0 asked for any free port
        self._server.start()

    def _page_metrics(self) -> Iterable[Metric]:
        return () if self._server is None else page_metrics(self._server.counts)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def describe(self) -> str:
        return f"prometheus {self.url}" + (" with basic auth" if self.web.basic_auth_users else "")

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
                              web=web_config.from_settings(settings), max_connections=settings["max_connections"])


KIND = ExporterKind("prometheus", "the metrics page Prometheus scrapes", settings=(
    Setting("port", port, "the port to listen on", 8080),
    Setting("address", text("an address to listen on, e.g. 0.0.0.0 or ::"), "the address to listen on", "0.0.0.0"),
    Setting("path", text("a URL path, e.g. /metrics"), "the URL path of the metrics page", "/metrics"),
    Setting(tls.CERT_FILE, readable_file("a PEM file path"),
            "the server certificate (PEM, chain after it); with key_file, the page is served over TLS only"),
    Setting(tls.KEY_FILE, readable_file("a PEM file path"), "the private key of cert_file (PEM, unencrypted)"),
    Setting(tls.CLIENT_CA_FILE, readable_file("a PEM file path"),
            "the CA (PEM) that clients' certificates must chain to; with it, a client without one is refused"),
    Setting(web_config.WEB_CONFIG_FILE, web_config.web_config_file,
            "a web config file as Prometheus' exporters take it (node_exporter's --web.config.file): "
            "tls_server_config and basic_auth_users"),
    Setting(web_config.TLS_SERVER_CONFIG, web_config.tls_server_config,
            "the web config file's tls_server_config, given here: cert_file, key_file, client_auth_type, "
            "client_ca_file, min_version, max_version"),
    Setting(web_config.BASIC_AUTH_USERS, web_config.basic_auth_users,
            "user name -> bcrypt hash: the page is served only to requests with one of these users' passwords"),
    Setting("max_connections", positive_int, "the most connections open at once; past it, a client that has not "
                                             "sent its request makes room, or the new one is refused",
            DEFAULT_MAX_CONNECTIONS),
), build=_build, check_together=web_config.check_settings)
