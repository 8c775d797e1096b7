"""A tracer process under measurement: started, watched until ready, sampled, stopped.

Its stdout and stderr are read line by line on a thread, each line stamped with
the time it arrived, so "ready" can be the moment a line appeared (bpftrace,
bcc) or the moment an outside check first passed (gespann's /metrics). The
process runs in a session of its own, so stopping it reaches nothing else.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import procfs


class NotReady(RuntimeError):
    """The process exited, or did not get ready in time; the message carries its last output."""


@dataclass(frozen=True)
class Startup:
    wall_s: float  # from just before the process was started to ready
    cpu_s: float  # the process's CPU time when it was seen ready


class Launched:
    """`argv` running, its output collected. Use as a context manager: leaving it stops the process."""

    def __init__(self, argv: Sequence[str], env: dict | None = None, cwd: str | None = None,
                 stdout_path: str | None = None):
        """With `stdout_path`, standard output goes to that file (a record stream the bench should not
        spend CPU reading while it is measured) and only standard error is collected."""
        self.argv = list(argv)
        self._stdout = open(stdout_path, "w") if stdout_path else None  # noqa: SIM115 (closed by stop())
        self.lines: list[tuple[float, str]] = []  # (seconds since start, line)
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._stdout or subprocess.PIPE,
                                     stderr=subprocess.PIPE if self._stdout else subprocess.STDOUT, env=env, cwd=cwd,
                                     text=True, errors="replace", bufsize=1, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stderr if self._stdout else self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def output(self) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def wait_ready(self, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> Startup:
        """Poll `check` until it passes; the start-up is measured at that moment."""
        deadline = self.started + timeout_s
        while True:
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise NotReady(f"{self.argv[0]} exited with status {self.proc.returncode} before it was ready:\n"
                               f"{_tail(self.output())}")
            if check():
                wall = time.monotonic() - self.started
                return Startup(wall, procfs.usage(self.pid).cpu_s)
            if time.monotonic() > deadline:
                raise NotReady(f"{self.argv[0]} was not ready after {timeout_s:.0f} s:\n{_tail(self.output())}")
            time.sleep(interval_s)

    def wait_line(self, predicate: Callable[[str], bool], timeout_s: float) -> Startup:
        """Wait for an output line that satisfies `predicate`; the start-up is when that line arrived.

        The CPU time is read when the line is noticed (within a few ms of it)."""
        def seen() -> bool:
            with self._lock:
                return any(predicate(line) for _, line in self.lines)
        startup = self.wait_ready(seen, timeout_s, interval_s=0.002)
        with self._lock:
            arrived = next(t for t, line in self.lines if predicate(line))
        return Startup(arrived, startup.cpu_s)

    def usage(self) -> procfs.Usage:
        return procfs.usage(self.pid)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30) -> int:
        """Signal the process (SIGINT: tracers print their maps and detach), wait, and return its status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        if self._stdout:
            self._stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
