"""The metrics page over TLS, with and without client certificates: scraped by a real Prometheus, refused to
clients the configured CA did not vouch for, and every TLS setting checked at config time, naming its key."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import throwaway_certs
from exporter_figures import FIGURES_A, NO_LABELS, ORIGINAL_A, FedCollector
from prometheus_server import BINARY, SKIP_REASON, Prometheus

from gespann import config
from gespann.exporters import PrometheusExporter
from gespann.exporters.tls import TlsFiles

pytestmark = pytest.mark.skipif(throwaway_certs.OPENSSL is None, reason=throwaway_certs.SKIP_REASON)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> throwaway_certs.Certificates:
    return throwaway_certs.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def serving(certs, request):
    """An exporter of figures A over TLS; `@pytest.mark.parametrize("serving", [True], indirect=True)` with
    True requires client certificates from the test CA."""
    client_ca = str(certs.ca.cert) if getattr(request, "param", False) else None
    exporter = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=0,
                                  tls=TlsFiles(str(certs.server.cert), str(certs.server.key), client_ca))
    exporter.start()
    yield exporter
    exporter.close()


requiring_client_certificates = pytest.mark.parametrize("serving", [True], indirect=True, ids=["client-certs"])


def client_context(certs, client: throwaway_certs.Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def fetch(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def total_connections(page: str) -> float:
    return next(float(line.split()[1]) for line in page.splitlines() if line.startswith("gespann_total_connections "))


@requiring_client_certificates
def test_a_client_with_a_certificate_of_the_ca_reads_the_page_and_only_at_its_path(serving, certs):
    assert serving.url.startswith("https://127.0.0.1:")
    status, page = fetch(serving.url, client_context(certs, certs.client))
    assert status == 200 and total_connections(page) == ORIGINAL_A["gespann_total_connections"][NO_LABELS]
    status, page = fetch(serving.url.replace("/metrics", "/other"), client_context(certs, certs.client))
    assert (status, page) == (404, "gespann serves metrics at /metrics\n")


@requiring_client_certificates
@pytest.mark.parametrize("who", ["no certificate", "a stranger's certificate"])
def test_a_client_without_a_certificate_of_the_ca_is_refused(serving, certs, who):
    context = client_context(certs, None if who == "no certificate" else certs.stranger)
    # TLS 1.3 finishes the client's side of the handshake first: the refusal arrives on the first read.
    with pytest.raises(OSError) as refused:
        fetch(serving.url, context)
    cause = refused.value.reason if isinstance(refused.value, urllib.error.URLError) else refused.value
    # The server's alert, or its closing the connection while the client still writes its request.
    assert isinstance(cause, (ssl.SSLError, ConnectionError)), refused.value
    status, _ = fetch(serving.url, client_context(certs, certs.client))  # and the server serves on
    assert status == 200


def test_without_a_client_ca_any_tls_client_reads_the_page_and_plain_http_gets_nothing(serving, certs):
    status, page = fetch(serving.url, client_context(certs))
    assert status == 200 and total_connections(page) == ORIGINAL_A["gespann_total_connections"][NO_LABELS]
    plain = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=5)
    with pytest.raises((http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError)):
        plain.request("GET", "/metrics")
        plain.getresponse()
    plain.close()


def test_a_client_that_never_starts_its_handshake_holds_up_no_one(serving, certs):
    """Handshakes are non-blocking steps of the event loop: one that never starts waits for no one."""
    with socket.create_connection(("127.0.0.1", serving.port), timeout=5):
        started = time.monotonic()
        status, _ = fetch(serving.url, client_context(certs))
        assert status == 200 and time.monotonic() - started < 3


def test_ipv6_loopback_over_tls(certs):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    exporter = PrometheusExporter(FedCollector(FIGURES_A), address="::1", port=0,
                                  tls=TlsFiles(str(certs.server.cert), str(certs.server.key)))
    exporter.start()
    try:
        assert exporter.url.startswith("https://[::1]:")
        assert fetch(exporter.url, client_context(certs))[0] == 200
    finally:
        exporter.close()


@pytest.fixture
def prometheus_of(tmp_path):
    if BINARY is None:
        pytest.skip(SKIP_REASON)
    started = []

    def start(exporter: PrometheusExporter, tls_config: dict) -> Prometheus:
        started.append(Prometheus(f"127.0.0.1:{exporter.port}", exporter.path, tmp_path, tls_config=tls_config))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


@requiring_client_certificates
def test_prometheus_scrapes_over_tls_with_its_client_certificate(serving, certs, prometheus_of):
    prometheus = prometheus_of(serving, {"ca_file": str(certs.ca.cert), "cert_file": str(certs.client.cert),
                                         "key_file": str(certs.client.key)})
    prometheus.wait_for(lambda: prometheus.vector("gespann_total_connections"), "the first scrape over TLS")
    assert prometheus.vector("gespann_total_connections") == ORIGINAL_A["gespann_total_connections"]
    assert prometheus.vector("up") == {NO_LABELS: 1.0}


#: How Go reports a connection the server closed under it, alert unread.
CLOSED = ("read: connection reset by peer", "write: broken pipe", ": EOF")


@requiring_client_certificates
@pytest.mark.parametrize(
    "who, error",
    [("no certificate", "remote error: tls: certificate required"),
     ("a stranger's certificate", "remote error: tls: unknown certificate authority")],
    ids=["no-certificate", "stranger"])
def test_prometheus_without_a_client_certificate_of_the_ca_is_refused(serving, certs, prometheus_of, who, error):
    tls_config = {"ca_file": str(certs.ca.cert)}
    if who != "no certificate":
        tls_config.update(cert_file=str(certs.stranger.cert), key_file=str(certs.stranger.key))
    prometheus = prometheus_of(serving, tls_config)
    prometheus.wait_for(lambda: any(t["lastError"] for t in prometheus.targets()), "a failed scrape")
    [target] = prometheus.targets()
    # The server's alert; or, when the server closed before Prometheus read the alert, the closed connection.
    assert target["health"] == "down" and target["lastError"].endswith((error, *CLOSED)), target["lastError"]
    assert prometheus.vector("up") == {NO_LABELS: 0.0}
    assert prometheus.vector("gespann_total_connections") == {}


# The settings, checked when the config is read.

def prometheus_settings(**settings) -> dict:
    return {"exporters": [{"type": "prometheus", "settings": {"address": "127.0.0.1", **settings}}]}


KEY = "exporters[0].settings"


def test_the_tls_settings_reach_the_exporter(certs):
    [exporter] = config.parse(prometheus_settings(
        cert_file=str(certs.server.cert), key_file=str(certs.server.key),
        client_ca_file=str(certs.ca.cert))).exporters
    assert exporter.settings["client_ca_file"] == str(certs.ca.cert)
    [plain] = config.parse(prometheus_settings()).exporters
    assert not {"cert_file", "key_file", "client_ca_file"} & plain.settings.keys()


@pytest.mark.parametrize("settings, key, problem", [
    (lambda c: {"cert_file": "/nonexistent/server.crt", "key_file": c.server.key}, "cert_file",
     "cannot read '/nonexistent/server.crt': No such file or directory"),
    (lambda c: {"cert_file": c.server.cert, "key_file": str(c.server.key.parent)}, "key_file", "Is a directory"),
    (lambda c: {"key_file": c.server.key}, "key_file", "given without cert_file"),
    (lambda c: {"cert_file": c.server.cert}, "key_file", "missing: cert_file needs the private key"),
    (lambda c: {"client_ca_file": c.ca.cert}, "client_ca_file", "client certificates need TLS"),
    (lambda c: {"cert_file": c.server.cert, "key_file": c.client.key}, "cert_file", "KEY_VALUES_MISMATCH"),
    (lambda c: {"cert_file": c.server.key, "key_file": c.server.key}, "cert_file", "not a PEM certificate"),
    (lambda c: {"cert_file": c.server.cert, "key_file": c.server.key, "client_ca_file": c.ca.key},
     "client_ca_file", "holds no usable CA certificate"),
    (lambda c: {"cert_file": c.server.cert, "key_file": c.server.key, "client_ca_file": ""}, "client_ca_file",
     "expected a PEM file path"),
], ids=["missing-file", "directory", "key-without-cert", "cert-without-key", "ca-without-tls", "key-of-another-cert",
        "key-as-cert", "key-as-ca", "empty-path"])
def test_a_bad_tls_setting_is_an_error_naming_its_key(certs, settings, key, problem):
    given = {name: str(value) for name, value in settings(certs).items()}
    with pytest.raises(config.ConfigError) as err:
        config.parse(prometheus_settings(**given))
    assert err.value.key == f"{KEY}.{key}"
    assert problem in err.value.problem, err.value.problem


def test_gespann_run_exits_2_naming_the_key(certs, tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_text(f"exporters:\n  - type: prometheus\n    settings: {{key_file: {certs.server.key}}}\n")
    result = subprocess.run([sys.executable, "-m", "gespann", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gespann: config: {KEY}.key_file: given without cert_file: a key serves TLS only with its certificate"]
