"""gespann as the bench runs it: `gespann run` with a config of the bench's, ready when /metrics answers.

The config serves Prometheus on a free loopback port and scopes the probes to
the bench's namespace; an attach mode may be forced (`tracepoint`, to compare
with bpftrace on the very same kind of attachment). The full probe set is
whatever `gespann run` attaches: the start-up line names it.
"""
from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .counts import Counts
from .process import Launched, Startup

STARTUP_TIMEOUT_S = 120
_PROBES_LINE = re.compile(r"running: probes (?P<probes>.*?); exporting to")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, netns_path: str | None, attach_mode: str | None = None, extra: str = "") -> str:
    """The bench's config; `extra` is more top-level YAML (a `labels:` section, say)."""
    lines = ["log_level: info", "exporters:", "  - type: prometheus",
             f"    settings: {{port: {port}, address: 127.0.0.1}}"]
    if netns_path:
        lines += ["scope:", f"  netns: {netns_path}"]
    if attach_mode:
        lines += ["attach:", f"  mode: {attach_mode}"]
    return "\n".join(lines) + "\n" + extra


def counts_from_metrics(text: str) -> Counts:
    """The TCP connection counters of a /metrics page."""
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("protocol", "tcp") != "tcp":
                continue
            key = sample.labels.get("role") or sample.labels.get("direction") or sample.labels.get("reason") or ""
            values[(sample.name, key)] = values.get((sample.name, key), 0) + sample.value

    def total(name: str) -> int:
        return int(sum(v for (n, _), v in values.items() if n == name))

    return Counts(int(values.get(("gespann_connections_opened_total", "client"), 0)),
                  int(values.get(("gespann_connections_opened_total", "server"), 0)),
                  int(values.get(("gespann_connections_closed_total", "client"), 0)),
                  int(values.get(("gespann_connections_closed_total", "server"), 0)),
                  total("gespann_connections_reset_total"), total("gespann_connections_failed_total"))


#: The line gespann logs when a cold start resolved the kernel's types in a child process (gespann/btf/apart.py).
_CHILD_LINE = re.compile(r"in a child process: (?P<ms>\d+) ms, its peak RSS (?P<mib>[\d.]+) MiB")


def btf_child(output: str) -> tuple[float, float] | None:
    """(milliseconds, peak RSS in MiB) of the child that resolved kernel types on a cold start, if logged."""
    match = _CHILD_LINE.search(output)
    return (float(match["ms"]), float(match["mib"])) if match else None


def probes_attached(output: str) -> str | None:
    """'tcp_lifecycle=tp_btf/inet_sock_set_state(bpf_link), ...' from the start-up line, if logged."""
    match = _PROBES_LINE.search(output)
    return match["probes"] if match else None


class GespannMetrics:
    """`gespann run` in metrics mode."""

    def __init__(self, executable: Path, workdir: Path, netns_path: str | None, attach_mode: str | None = None,
                 extra: str = "", name: str = ""):
        """`extra`: more of the config (see config_text), under a config file of its own `name`."""
        self.executable = executable
        self.port = free_port()
        self.config = workdir / f"gespann-{name or attach_mode or 'auto'}.yaml"
        self.config.write_text(config_text(self.port, netns_path, attach_mode, extra))
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def start(self, env: dict | None = None) -> tuple[Launched, Startup]:
        launched = Launched([str(self.executable), "run", "--config", str(self.config)], env=env)
        try:
            return launched, launched.wait_ready(lambda: self.scrape(timeout_s=0.5) is not None, STARTUP_TIMEOUT_S)
        except BaseException:
            launched.stop()
            raise

    def scrape(self, timeout_s: float = 5) -> str | None:
        try:
            with urllib.request.urlopen(self.url, timeout=timeout_s) as response:
                return response.read().decode() if response.status == 200 else None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def counts(self) -> Counts:
        text = self.scrape()
        if text is None:
            raise RuntimeError(f"gespann stopped answering on {self.url}")
        return counts_from_metrics(text)
