"""TLS and basic auth configured the way Prometheus' exporters are (the exporter-toolkit's web config): read from
a file or from gespann's own settings, every mistake a config error naming its key, and what a client without
the right password or certificate gets: a 401 or a TLS refusal, counted, logged once per client."""

from __future__ import annotations

import base64
import logging
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import bcrypt
import pytest
import throwaway_certs
from exporter_figures import FIGURES_A, NO_LABELS, ORIGINAL_A, FedCollector

from gespann import config
from gespann.exporters import PrometheusExporter
from gespann.exporters.web_config import WebConfig

pytestmark = pytest.mark.skipif(throwaway_certs.OPENSSL is None, reason=throwaway_certs.SKIP_REASON)
KEY = "exporters[0].settings"
USER, PASSWORD = "prometheus", "s3cret pass"
#: As `htpasswd -nbBC 10` writes it ($2y$), which is what the exporter-toolkit's documentation shows.
HASH = "$2y$" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()[4:]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> throwaway_certs.Certificates:
    return throwaway_certs.make(tmp_path_factory.mktemp("certs"))


def settings(**more) -> dict:
    return {"exporters": [{"type": "prometheus", "settings": {"address": "127.0.0.1", **more}}]}


def parsed_web(**more) -> WebConfig:
    [exporter] = config.parse(settings(**more)).exporters
    from gespann.exporters.web_config import from_settings

    return from_settings(exporter.settings)


def config_error(**more) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as err:
        config.parse(settings(**more))
    return err.value


# The settings.

def test_a_web_config_file_as_node_exporter_takes_it(certs, tmp_path):
    """Relative paths are the file's directory's, as the toolkit takes them."""
    (tmp_path / "server.crt").write_bytes(certs.server.cert.read_bytes())
    (tmp_path / "server.key").write_bytes(certs.server.key.read_bytes())
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                   f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca.cert}\n"
                   f"  min_version: TLS12\nhttp_server_config:\n  http2: true\n"
                   f"basic_auth_users:\n  {USER}: {HASH}\n")
    found = parsed_web(web_config_file=str(web))
    assert found.tls.cert_file == str(tmp_path / "server.crt") and found.tls.client_ca_file == str(certs.ca.cert)
    assert found.tls.client_auth == "RequireAndVerifyClientCert" and found.basic_auth_users == {USER: HASH}


def test_the_same_keys_inline_and_the_older_ones(certs):
    inline = parsed_web(tls_server_config={"cert_file": str(certs.server.cert), "key_file": str(certs.server.key),
                                           "client_ca_file": str(certs.ca.cert)}, basic_auth_users={USER: HASH})
    assert inline.tls.client_auth == "RequireAndVerifyClientCert"  # a CA alone: the toolkit's default
    older = parsed_web(cert_file=str(certs.server.cert), key_file=str(certs.server.key))
    assert older.tls.cert_file == str(certs.server.cert) and older.tls.client_auth == "NoClientCert"
    assert parsed_web() == WebConfig()


@pytest.mark.parametrize("given, key, problem", [
    (lambda c, w: {"web_config_file": w, "cert_file": c.server.cert, "key_file": c.server.key}, "cert_file",
     "given with web_config_file"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key},
                   "cert_file": c.server.cert, "key_file": c.server.key}, "cert_file", "given with tls_server_config"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert}}, "tls_server_config.key_file", "missing"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key,
                                         "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file", "missing: RequireAndVerifyClientCert verifies"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key,
                                         "client_auth_type": "RequireAnyClientCert", "client_ca_file": c.ca.cert}},
     "tls_server_config.client_auth_type", "accepts certificates nobody verified"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key,
                                         "client_auth_type": "Sometimes"}},
     "tls_server_config.client_auth_type", "unknown client auth type 'Sometimes'"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key,
                                         "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
     "tls_server_config.cipher_suites", "not supported by gespann"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.server.key,
                                         "min_version": "TLS13", "max_version": "TLS12"}},
     "tls_server_config.min_version", "above max_version"),
    (lambda c, w: {"tls_server_config": {"cert_file": c.server.cert, "key_file": c.client.key}},
     "tls_server_config.cert_file", "KEY_VALUES_MISMATCH"),
    (lambda c, w: {"basic_auth_users": {USER: PASSWORD}}, f"basic_auth_users.{USER}", "not a bcrypt hash"),
    (lambda c, w: {"basic_auth_users": {"a:b": HASH}}, "basic_auth_users.a:b", "hold no ':'"),
    (lambda c, w: {"basic_auth_users": {}}, "basic_auth_users", "empty"),
    (lambda c, w: {"max_connections": 0}, "max_connections", "at least 1"),
], ids=["file-and-flat", "inline-and-flat", "no-key", "verify-without-ca", "unverified", "unknown-type",
        "cipher-suites", "versions", "key-of-another-cert", "plain-password", "colon", "no-users", "no-connections"])
def test_a_mistake_is_an_error_naming_its_key(certs, tmp_path, given, key, problem):
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{{USER}: '{HASH}'}}\n")

    def text(value):
        if isinstance(value, dict):
            return {name: text(item) for name, item in value.items()}
        return str(value) if hasattr(value, "is_file") else value

    err = config_error(**text(given(certs, web)))
    assert err.key == f"{KEY}.{key}" and problem in err.problem, err


def test_a_mistake_in_the_file_names_the_file_and_its_key(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    err = config_error(web_config_file=str(web))
    assert err.key == f"{KEY}.web_config_file"
    assert err.problem.startswith(f"{web}: tls_server_config.cert_file: cannot read '"), err
    assert err.problem.endswith("/missing.crt': No such file or directory"), err  # (long paths are shortened)
    web.write_text("basic_auth_users: {a: b}\nweb_listen: x\n")
    assert "web_listen: unknown key" in config_error(web_config_file=str(web)).problem


def test_without_bcrypt_basic_auth_is_a_config_error_and_gespann_run_exits_2(tmp_path):
    """bcrypt is imported only for basic auth: a run configured with it, where bcrypt is missing, says so."""
    path = tmp_path / "gespann.yaml"
    path.write_text(f"exporters:\n  - type: prometheus\n    settings: {{basic_auth_users: {{{USER}: '{HASH}'}}}}\n")
    without_bcrypt = ("import runpy, sys; sys.modules['bcrypt'] = None; sys.argv[0] = 'gespann'; "
                      "runpy.run_module('gespann', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", without_bcrypt, "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"gespann: config: {KEY}.basic_auth_users: basic auth needs the Python package bcrypt, which is not "
        "installed (pip install bcrypt, or Debian's python3-bcrypt)"]


# Basic auth over real sockets.

@pytest.fixture
def guarded():
    exporter = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=0,
                                  web=WebConfig(basic_auth_users={USER: HASH}))
    exporter.start()
    yield exporter
    exporter.close()


def get(url: str, user: str | None = None, password: str = "", **options) -> tuple[int, dict, str]:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10, **options) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def sample(page: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith(name + " "))


def test_basic_auth_serves_the_right_password_only_and_counts_the_rest(guarded, caplog):
    caplog.set_level(logging.WARNING, logger="gespann.exporters.page_server")
    status, headers, _ = get(guarded.url)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="gespann", charset="UTF-8"'
    for _ in range(3):
        assert get(guarded.url, USER, "wrong")[0] == 401
    assert get(guarded.url, "nobody", PASSWORD)[0] == 401
    for _ in range(2):  # the second is answered from what the first check found
        status, _, page = get(guarded.url, USER, PASSWORD)
        assert status == 200 and sample(page, "gespann_total_connections") == ORIGINAL_A[
            "gespann_total_connections"][NO_LABELS]
    _, _, page = get(guarded.url, USER, PASSWORD)
    assert sample(page, 'gespann_metrics_page_auth_failures_total{kind="no_credentials"}') == 1
    assert sample(page, 'gespann_metrics_page_auth_failures_total{kind="wrong_credentials"}') == 4
    assert sample(page, 'gespann_metrics_page_requests_total{code="401"}') == 5
    refusals = [record.getMessage() for record in caplog.records]
    assert refusals == ["metrics page: refused 127.0.0.1: a wrong user name or password (basic auth); more "
                        "refusals of it for this are logged once a minute, with their count"], refusals
    assert guarded.describe().endswith("/metrics with basic auth")


def test_a_password_check_holds_up_no_other_client(guarded):
    """bcrypt runs on its own thread: a client whose check is under way delays neither 404s nor connections."""
    slow = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(3)]
    header = base64.b64encode(f"{USER}:guess".encode())
    for index, client in enumerate(slow):
        client.sendall(b"GET /metrics HTTP/1.0\r\nAuthorization: Basic " + header + str(index).encode() + b"\r\n\r\n")
    assert get(guarded.url.replace("/metrics", "/elsewhere"))[0] == 404
    for client in slow:
        assert client.recv(64).startswith(b"HTTP/1.0 401")
        client.close()


# A real gespann run, scraped by a real Prometheus with basic auth and a client certificate.

@pytest.mark.root
@pytest.mark.process
def test_prometheus_scrapes_gespann_run_with_basic_auth_and_tls_and_the_rest_are_refused(certs, tmp_path):
    from prometheus_server import BINARY, SKIP_REASON, Prometheus
    from served_gespann import GespannProcess

    if BINARY is None:
        pytest.skip(SKIP_REASON)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs.server.cert}\n  key_file: {certs.server.key}\n"
                   f"  client_ca_file: {certs.ca.cert}\nbasic_auth_users:\n  {USER}: '{HASH}'\n")
    trusted = ssl_context(certs, certs.client)
    gespann = GespannProcess(tmp_path, f"web_config_file: {web}", scheme="https",
                             ready=lambda: _answers(gespann_url(tmp_path), trusted))
    prometheus = None
    for name in ("prometheus-right", "prometheus-wrong"):
        (tmp_path / name).mkdir()
    try:
        tls_config = {"ca_file": str(certs.ca.cert), "cert_file": str(certs.client.cert),
                      "key_file": str(certs.client.key)}
        prometheus = Prometheus(f"127.0.0.1:{gespann.port}", "/metrics", tmp_path / "prometheus-right",
                                tls_config=tls_config, basic_auth={"username": USER, "password": PASSWORD})
        prometheus.wait_for(lambda: prometheus.vector("up") == {NO_LABELS: 1.0}, "a scrape with basic auth and TLS")
        assert prometheus.vector("gespann_metrics_page_connections")
        wrong = Prometheus(f"127.0.0.1:{gespann.port}", "/metrics", tmp_path / "prometheus-wrong",
                           tls_config=tls_config, basic_auth={"username": USER, "password": "wrong"})
        try:
            wrong.wait_for(lambda: any(t["lastError"] for t in wrong.targets()), "a refused scrape")
            assert wrong.targets()[0]["lastError"].endswith("server returned HTTP status 401 Unauthorized")
        finally:
            wrong.stop()
        without_certificate = ssl_context(certs)
        with pytest.raises(OSError):  # the handshake refused (or the connection closed under the request)
            get(gespann.url, USER, PASSWORD, context=without_certificate)
        with socket.create_connection(("127.0.0.1", gespann.port), timeout=10) as plain:
            plain.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                answer = b"".join(iter(lambda: plain.recv(4096), b""))
            except ConnectionResetError:
                answer = b""  # the handshake failed, and the connection was closed with the request unread
            assert b"HTTP/" not in answer
        status, _, page = get(gespann.url, USER, PASSWORD, context=trusted)
        assert status == 200
        assert sample(page, 'gespann_metrics_page_auth_failures_total{kind="wrong_credentials"}') >= 1
        assert sample(page, 'gespann_metrics_page_auth_failures_total{kind="client_certificate"}') == 1
        assert sample(page, 'gespann_metrics_page_auth_failures_total{kind="tls_handshake"}') == 1
    finally:
        if prometheus is not None:
            prometheus.stop()
        err = gespann.stop()
    refused = sorted(line.split(" WARNING ", 1)[1] for line in err.splitlines() if "refused 127.0.0.1" in line)
    assert len(refused) == 3, err  # once per client and kind, however often it was refused
    assert "Traceback" not in err


def gespann_url(tmp_path) -> str:
    import yaml

    settings = yaml.safe_load((tmp_path / "gespann.yaml").read_text())["exporters"][0]["settings"]
    return f"https://127.0.0.1:{settings['port']}/metrics"


def _answers(url: str, context) -> bool:
    try:
        return get(url, USER, PASSWORD, context=context)[0] == 200
    except OSError:
        return False


def ssl_context(certs, client=None):
    import ssl

    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context
