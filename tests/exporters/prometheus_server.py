"""A real Prometheus of the test's own, scraping one target every second, queried over its HTTP API.

Only the process started here is ever stopped, by its PID; the Debian package's
service, if any, is left alone.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

BINARY = shutil.which("prometheus")
SKIP_REASON = "needs Debian's `prometheus` binary on PATH (tools/setup-host.sh installs it; CI has it)"

Vector = dict[frozenset, float]  # labels (without job and instance) -> value


class PrometheusError(AssertionError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    """`tls_config` (the scrape job's, e.g. {"ca_file": ...}) makes it scrape over https; `basic_auth` (the
    job's, {"username": ..., "password": ...}) sends credentials; `flags` are more command-line flags."""

    def __init__(self, target: str, metrics_path: str, workdir: Path, tls_config: Optional[dict] = None,
                 basic_auth: Optional[dict] = None, flags: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        tls = "" if tls_config is None else f"    scheme: https\n    tls_config: {json.dumps(tls_config)}\n"
        auth = "" if basic_auth is None else f"    basic_auth: {json.dumps(basic_auth)}\n"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: gespann\n    metrics_path: {metrics_path}\n{tls}{auth}"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        with self._log.open("w") as log:
            self._process = subprocess.Popen(
                [BINARY, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", *flags],
                stdout=log, stderr=subprocess.STDOUT)
        self.wait_for(self._ready, "Prometheus to be ready")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def query(self, expression: str) -> dict:
        """The `data` of an instant query; a query error fails the test with Prometheus' message."""
        return self._get("/api/v1/query", query=expression)

    def vector(self, expression: str) -> Vector:
        data = self.query(expression)
        assert data["resultType"] == "vector", data
        return {_labels(item["metric"]): float(item["value"][1]) for item in data["result"]}

    def matrix(self, expression: str) -> dict[frozenset, list[float]]:
        data = self.query(expression)
        assert data["resultType"] == "matrix", data
        return {_labels(item["metric"]): [float(value) for _, value in item["values"]] for item in data["result"]}

    def targets(self) -> list[dict]:
        """The active scrape targets, each with its `health` and `lastError`."""
        return self._get("/api/v1/targets", state="active")["activeTargets"]

    def metadata(self, metric: str) -> list[dict]:
        """What the scraped targets said about `metric` (its type, help)."""
        return self._get("/api/v1/targets/metadata", metric=metric)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise PrometheusError(f"timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log.read_text().splitlines()[-lines:])

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            raise PrometheusError(f"{params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]


def _labels(metric: dict) -> frozenset:
    return frozenset((name, value) for name, value in metric.items()
                     if name not in ("__name__", "job", "instance"))
