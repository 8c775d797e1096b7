"""A real `gespann run` of the test's own, serving its metrics page on a free loopback port.

Started as a user starts it, stopped by SIGTERM (by its PID only); `page()`
fetches the page as a scraper would. Its figures are those of a namespace the
test makes, with open connections read by sock_diag there, so that thousands
of the test's own connections on the host's loopback change nothing on the
page: what a scrape costs is then the server's share alone.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from namespaces import Namespace
from prometheus_server import free_port

#: The soft limit on open files a process gets by default (the kernel's, and systemd's without LimitNOFILE=).
DEFAULT_OPEN_FILES = 1024


def _default_open_files_limit() -> None:
    """gespann starts as a service would without LimitNOFILE=: it must raise the soft limit itself."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(DEFAULT_OPEN_FILES, hard), hard))


class GespannProcess:
    def __init__(self, workdir: Path, settings: str = "", scheme: str = "http", ready=None):
        """`settings`: more of the prometheus exporter's settings, as YAML flow mapping items."""
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}/metrics"
        self._namespace = Namespace()
        config = workdir / "gespann.yaml"
        more = f", {settings}" if settings else ""
        config.write_text(f"exporters: [{{type: prometheus, settings: "
                          f"{{port: {self.port}, address: 127.0.0.1{more}}}}}]\n"
                          f"scope: {{netns: {self._namespace.path}, protocols: [tcp]}}\n"
                          f"attach: {{open_connections: user_space}}\n")
        self._stderr = (workdir / "gespann.stderr").open("w+")
        self.process = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=self._stderr, text=True,
                                        preexec_fn=_default_open_files_limit)
        self.pid = self.process.pid
        deadline = time.monotonic() + 60
        while not (ready or self._serving)():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"gespann did not serve its page:\n{self.stderr()}")
            time.sleep(0.1)

    def page(self, timeout: float = 5, **request) -> str:
        with urllib.request.urlopen(self.url, timeout=timeout, **request) as response:
            return response.read().decode()

    def sample(self, line_start: str, **request) -> Optional[float]:
        """The value of the first sample line starting with `line_start` (name and labels)."""
        for line in self.page(**request).splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self) -> str:
        """SIGTERM; its exit status must be 0. Returns its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        self._namespace.remove()
        err = self.stderr()
        self._stderr.close()
        assert self.process.returncode == 0, err
        return err

    def _serving(self) -> bool:
        try:
            self.page(timeout=2)
            return True
        except (OSError, urllib.error.URLError):
            return False
