"""A real Prometheus scrapes the page in either format and stores the same samples from both: OpenMetrics 1.0.0
as it asks by default, and the text format 0.0.4 as an older Prometheus asks (this one always offers OpenMetrics,
so a relay of the test's own rewrites its Accept header to text/plain;version=0.0.4 on the way)."""

from __future__ import annotations

import socket
import threading

import pytest
from exporter_figures import FIGURES_A, ORIGINAL_A, FedCollector
from prometheus_server import BINARY, SKIP_REASON, Prometheus

from gespann.exporters import PrometheusExporter

pytestmark = pytest.mark.skipif(BINARY is None, reason=SKIP_REASON)
TEXT_ACCEPT = b"Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1"


@pytest.fixture(scope="module")
def exporter():
    served = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=0)
    served.start()
    yield served
    served.close()


class AcceptRewriter:
    """Relays each connection to `port`, its request's Accept header replaced by TEXT_ACCEPT."""

    def __init__(self, port: int):
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.rewritten = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client, socket.create_connection(self._target, timeout=5) as server:
                client.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                lines = [TEXT_ACCEPT if line.lower().startswith(b"accept:") else line for line in head.split(b"\r\n")]
                self.rewritten += TEXT_ACCEPT in lines
                server.sendall(b"\r\n".join(lines))
                for chunk in iter(lambda: server.recv(1 << 16), b""):
                    client.sendall(chunk)


#: OpenMetrics carries units (`# UNIT`), which Prometheus keeps in its metadata; the text format has none.
@pytest.mark.parametrize("text, unit", [(False, "bytes"), (True, "")], ids=["openmetrics", "text"])
def test_prometheus_stores_the_same_samples_from_either_format(exporter, tmp_path, text, unit):
    relay = AcceptRewriter(exporter.port) if text else None
    prometheus = Prometheus(f"127.0.0.1:{relay.port if text else exporter.port}", exporter.path, tmp_path)
    try:
        prometheus.wait_for(lambda: prometheus.vector("gespann_total_connections"), "the first scrape")
        prometheus.wait_for(lambda: prometheus.metadata("process_resident_memory_bytes"), "its metadata")
        for name in ("gespann_total_connections", "gespann_closed_connections_total", "gespann_open_connections"):
            assert prometheus.vector(name) == ORIGINAL_A[name], name
        [metadata] = prometheus.metadata("process_resident_memory_bytes")
        assert (metadata["type"], metadata["unit"]) == ("gauge", unit)
        assert prometheus.vector("up") == {frozenset(): 1.0}
        assert relay is None or relay.rewritten >= 1
    finally:
        prometheus.stop()
        if relay is not None:
            relay.close()
