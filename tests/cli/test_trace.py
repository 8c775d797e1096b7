"""`gespann trace` as a user runs it: one line per ended connection, as a table or JSON lines.

gespann is scoped to a namespace the test makes; the lines must be exactly the
connections the test made there, and the process must leave nothing loaded.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tcp_traffic import CLOSED_PORT, TcpTraffic, refused

from gespann.exporters.events import JSON_KEYS, table_header

pytestmark = [pytest.mark.root, pytest.mark.process]
COMM = Path("/proc/self/comm").read_text().strip()


class Trace:
    """A `gespann trace` process scoped to `namespace`, its stdout lines gathered by a thread."""

    def __init__(self, namespace, tmp_path, *args, config_text=""):
        config = tmp_path / "gespann.yaml"
        config.write_text(f"scope: {{netns: {namespace.path}}}\n{config_text}")
        self.namespace = namespace
        self.process = subprocess.Popen([sys.executable, "-m", "gespann", "trace", "--config", str(config), *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._gather, daemon=True).start()

    def _gather(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_attached(self, limit: float = 30.0) -> list[str]:
        """Refused connects in the namespace until trace prints one: from then on it is watching.
        The lines printed for them (all of them, after a pause for stragglers)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.namespace.enter():
                refused(2)
            line = self.next_line(0.5)
            if line is not None:
                seen = [line]
                while (more := self.next_line(0.5)) is not None:
                    seen.append(more)
                return seen
            assert self.process.poll() is None, self.process.stderr.read()
        raise AssertionError("gespann trace printed nothing within the limit")

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.process.returncode, self.process.stderr.read()


def test_trace_json_prints_one_exact_line_per_connection(namespace, tmp_path):
    trace = Trace(namespace, tmp_path, "--json")
    try:
        probing = [json.loads(line) for line in trace.wait_attached()]
        assert all((p["outcome"], p["reason"], p["remote_port"]) == ("failed", "refused", CLOSED_PORT)
                   for p in probing)
        with namespace.enter():
            traffic = TcpTraffic()
            client, server = traffic.connect()
            client.sendall(b"q" * 123)
            server.recv(123)
            server.sendall(b"r" * 45678)
            received = 0
            while received < 45678:
                received += len(client.recv(65536))
            client.close()
            server.recv(1)
            server.close()
            traffic.close()
            refused(2)
        lines = []
        while (line := trace.next_line(5 if len(lines) < 3 else 0.5)) is not None:
            lines.append(json.loads(line))
    finally:
        status, err = trace.stop()
    assert status == 0, err
    assert len(lines) == 3, lines
    assert all(list(line) == list(JSON_KEYS) for line in lines)
    ended = {line["role"]: line for line in lines if line["outcome"] == "close"}
    assert (ended["client"]["bytes_sent"], ended["client"]["bytes_received"]) == (123, 45678)
    assert (ended["server"]["bytes_sent"], ended["server"]["bytes_received"]) == (45678, 123)
    assert ended["client"]["local_port"] == ended["server"]["remote_port"]
    for line in ended.values():
        assert (line["pid"], line["comm"], line["protocol"]) == (os.getpid(), COMM, "tcp")
        assert line["local_address"] == line["remote_address"] == "127.0.0.1"
        assert line["rtt_seconds"] > 0 and line["duration_seconds"] > 0
    assert [line["outcome"] for line in lines].count("failed") == 1


def test_trace_table_has_tcplife_columns_and_count_ends_it(namespace, tmp_path):
    trace = Trace(namespace, tmp_path, "--count", "1")
    try:
        assert trace.next_line(60) == table_header()
        line = trace.wait_attached()[0]
        assert f" {os.getpid()} " in line and "failed/refused" in line and f"127.0.0.1:{CLOSED_PORT}" in line
        assert trace.process.wait(timeout=30) == 0  # --count 1: done after the first event, on its own
    finally:
        status, err = trace.stop()
    assert status == 0 and "Traceback" not in err, err


def test_trace_shows_a_udp_flow_once_it_went_idle(namespace, tmp_path):
    trace = Trace(namespace, tmp_path, "--json", config_text="connections: {udp_flow_timeout: 1}\n")
    try:
        trace.wait_attached()
        with namespace.enter():
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            server.bind(("127.0.0.1", 0))
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.connect(server.getsockname())
            for size in (11, 222):
                client.send(b"x" * size)
                server.recv(1000)
            client_port = client.getsockname()[1]
            client.close()
            server.close()
        lines = []
        while len(lines) < 2 and (line := trace.next_line(10)) is not None:
            lines.append(json.loads(line))
    finally:
        status, err = trace.stop()
    assert status == 0, err
    flows = {line["role"]: line for line in lines}
    assert set(flows) == {"client", "server"}, lines
    client, server = flows["client"], flows["server"]
    assert (client["protocol"], client["outcome"], client["local_port"]) == ("udp", "close", client_port)
    assert (client["bytes_sent"], client["datagrams_sent"], client["bytes_received"]) == (233, 2, 0)
    assert (server["bytes_received"], server["datagrams_received"], server["remote_port"]) == (233, 2, client_port)
    assert (client["pid"], client["comm"]) == (os.getpid(), COMM)
