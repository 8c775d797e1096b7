"""What the metrics page's server counts about its own clients, as gespann's own metrics on that page.

Declared like the catalogue's own metrics (gespann.figures: counters end in
`_total`, units in the name), named without the `gespann_` prefix the page
adds. Each prometheus exporter shows its own server's figures only, so two
pages on two ports never show one family twice.
"""

from __future__ import annotations

from gespann.collector import Metric, labels
from gespann.figures import counter, gauge

from .page_server import ServerCounts

CONNECTIONS = gauge("metrics_page_connections", (), "Connections to the metrics page open now.")
REQUESTS = counter("metrics_page_requests_total", ("code",), "Requests the metrics page answered, by HTTP status.")
REFUSED = counter(
    "metrics_page_connections_refused_total", (),
    "Connections refused at once: max_connections were open, each with a request being answered.")
EVICTED = counter(
    "metrics_page_connections_evicted_total", (),
    "Connections closed before their request was complete, to make room for a new one (at max_connections, "
    "or out of file descriptors).")
TIMEOUTS = counter(
    "metrics_page_timeouts_total", ("stage",),
    "Connections closed at their deadline: the request (and TLS handshake) incomplete after 10 s, or the answer "
    "unread after 60 s.")
AUTH_FAILURES = counter(
    "metrics_page_auth_failures_total", ("kind",),
    "Clients refused: basic auth without credentials or with wrong ones (401), no client certificate of the CA, "
    "or another failed TLS handshake (plain HTTP to the TLS port, say).")
ACCEPT_ERRORS = counter(
    "metrics_page_accept_errors_total", ("error",),
    "accept() failures by errno: EMFILE and ENFILE (out of file descriptors) pause accepting, never spin.")
PAGE_METRICS = (CONNECTIONS, REQUESTS, REFUSED, EVICTED, TIMEOUTS, AUTH_FAILURES, ACCEPT_ERRORS)


def page_metrics(counts: ServerCounts) -> tuple[Metric, ...]:
    """The server's figures now, in the collector's model (read from another thread: each dict is copied)."""
    return (
        Metric.of(CONNECTIONS, {(): counts.open_connections}),
        Metric.of(REQUESTS, {labels(code=code): n for code, n in dict(counts.requests).items()}),
        Metric.of(REFUSED, {(): counts.refused}),
        Metric.of(EVICTED, {(): counts.evicted}),
        Metric.of(TIMEOUTS, {labels(stage=stage): n for stage, n in dict(counts.timeouts).items()}),
        Metric.of(AUTH_FAILURES, {labels(kind=kind): n for kind, n in dict(counts.auth_failures).items()}),
        Metric.of(ACCEPT_ERRORS, {labels(error=error): n for error, n in dict(counts.accept_errors).items()}),
    )
