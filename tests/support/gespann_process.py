"""`gespann run` as a test starts it: a real process with the test's config, its metrics page, its log.

The log goes to a file, not a pipe: a process the test stops (SIGSTOP) or keeps for minutes must never
block on a pipe nobody reads, and the test reads the log whenever it wants to.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_page(text: str) -> dict[str, float]:
    """{'name{labels}': value} of every sample on a Prometheus text page."""
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def total(metrics: dict[str, float], name: str) -> float:
    """The sum of every series of one metric (`name` alone, or `name{...}`)."""
    return sum(value for key, value in metrics.items() if key == name or key.startswith(name + "{"))


class GespannRun:
    """`python -m gespann run` with `config` (YAML text, which should serve Prometheus on `port`)."""

    def __init__(self, config: str, workdir: Path, port: int, preexec_fn: Optional[Callable[[], None]] = None):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.config = workdir / "gespann.yaml"
        self.config.write_text(config)
        self.log_path = workdir / "gespann.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(self.config)],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self, timeout: float = 10) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=timeout) as page:
            return parse_page(page.read().decode())

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gespann exited with {self.process.returncode}:\n{self.log()}"
            try:
                self.scrape(timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gespann did not serve {self.url} within {timeout} s:\n{self.log()}")

    def wait_metrics(self, condition: Callable[[dict[str, float]], bool], timeout: float = 20) -> dict[str, float]:
        """The first page for which `condition` holds (the last one read, if none did within `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            metrics = self.scrape()
            if condition(metrics) or time.monotonic() > deadline:
                return metrics
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM (after SIGCONT, should it be stopped), and its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "GespannRun":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
