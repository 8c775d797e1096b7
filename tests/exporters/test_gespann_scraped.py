"""The whole chain, real at every link: traffic -> kernel probes -> `gespann run` -> a real Prometheus.

gespann runs as a process scoped to a namespace the test makes; known TCP and
UDP traffic runs there; Prometheus scrapes gespann every second and its HTTP
API must then give every metric name, with exactly the traffic's figures.
"""
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_server import BINARY, SKIP_REASON, Prometheus, free_port
from tcp_traffic import TcpTraffic, refused

from gespann.collector import CATALOGUE, Kind
from gespann.exporters.legacy_names import LEGACY_METRICS

pytestmark = [pytest.mark.root, pytest.mark.process]
EXCHANGES = ((10, 20), (300, 4000))  # TCP: (client sends, server replies)
UDP_SENT, UDP_REPLY = (100, 120, 80), (50,)  # datagram sizes: client to server, and the reply
NO_LABELS = frozenset()


def udp_exchange() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(server.getsockname())
    for size in UDP_SENT:
        client.send(b"u" * size)
        server.recv(65536)
    for size in UDP_REPLY:
        server.sendto(b"d" * size, client.getsockname())
        client.recv(65536)
    client.close()
    server.close()


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_prometheus_stores_every_metric_with_the_exact_traffic(namespace, tmp_path):
    if BINARY is None:
        pytest.skip(SKIP_REASON)
    port = free_port()
    config = tmp_path / "gespann.yaml"
    config.write_text(f"exporters: [{{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}]\n"
                      f"scope: {{netns: {namespace.path}}}\n")
    gespann = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prometheus = None
    try:
        deadline = time.monotonic() + 60
        while not serving(f"http://127.0.0.1:{port}/metrics"):
            assert gespann.poll() is None and time.monotonic() < deadline, gespann.communicate()[1]
            time.sleep(0.1)
        with namespace.enter():
            traffic = TcpTraffic()
            for sent, replied in EXCHANGES:
                traffic.exchange(sent, replied)
            traffic.close()
            refused(socket.AF_INET)
            udp_exchange()
        prometheus = Prometheus(f"127.0.0.1:{port}", "/metrics", tmp_path)
        tcp_payload = sum(s + r for s, r in EXCHANGES)
        udp_payload = sum(UDP_SENT) + sum(UDP_REPLY)
        prometheus.wait_for(lambda: prometheus.vector("gespann_bytes_sent_total") ==
                            {NO_LABELS: tcp_payload + udp_payload}, "a scrape with all the traffic")
        v = prometheus.vector
        assert v("gespann_total_connections") == {NO_LABELS: 2 * len(EXCHANGES) + 2}
        assert v("gespann_tcp_connections_total") == {NO_LABELS: 2 * len(EXCHANGES)}
        assert v("gespann_udp_connections_total") == {NO_LABELS: 2}
        assert v("gespann_closed_connections_total") == {NO_LABELS: 2 * len(EXCHANGES)}  # UDP flows still open
        assert v("gespann_open_connections") == {NO_LABELS: 2}
        assert v("gespann_failed_connections_total") == {NO_LABELS: 1}
        assert v("gespann_reset_connections_total") == {NO_LABELS: 0}
        assert v("gespann_bytes_received_total") == {NO_LABELS: tcp_payload + udp_payload}
        assert v('gespann_connection_bandwidth_bytes_total{protocol="udp",direction="sent"}') == \
            {frozenset({("direction", "sent"), ("protocol", "udp")}): udp_payload}
        assert v('sum(gespann_datagrams_total)') == {NO_LABELS: 2 * (len(UDP_SENT) + len(UDP_REPLY))}
        assert v('gespann_connection_events_total{event_type="failed"} > 0') == \
            {frozenset({("event_type", "failed"), ("protocol", "tcp"), ("reset_reason", "refused")}): 1}
        assert v("gespann_connect_latency_seconds_count") == {NO_LABELS: len(EXCHANGES)}
        assert v("gespann_rtt_seconds_count") == {NO_LABELS: 2 * len(EXCHANGES)}
        names = [metric.name for metric in LEGACY_METRICS] + [
            f"gespann_{spec.name}_count" if spec.kind is Kind.HISTOGRAM else f"gespann_{spec.name}"
            for spec in CATALOGUE
            if not spec.name.startswith(("process_", "peer_", "records_lost"))]  # opt-in labels, with records
        missing = [name for name in names if not v(name)]
        assert missing == [], f"names Prometheus has no series for: {missing}"
    finally:
        if prometheus is not None:
            prometheus.stop()
        gespann.send_signal(signal.SIGTERM)
        _, err = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, err
