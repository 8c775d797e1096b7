"""One run of the kernel-facing suite on one kernel: in a VM, or on the host directly.

The same shell script runs in both places. It touches a marker when it
starts (in a VM: when the kernel has booted), runs pytest with junit output,
and writes pytest's exit status when done, all into one shared directory. The
host reads the markers' modification times, which the host's own clock sets,
to split a run into boot and test time, and reads the markers' presence to
tell a kernel that did not boot from tests that failed. vng's own exit status
says nothing: without udev the guest finds no virtio-serial ports for the
script's output and status, falls back to the console, and vng exits 255
whatever the script did.
"""
from __future__ import annotations

import enum
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import junit, shares
from .kernels import Target
from .shares import Share
from .virtme import VirtmeNg

#: pytest's exit statuses that mean the tests ran: all passed, or some failed.
_TESTS_RAN = (0, 1)
_TAIL_LINES = 15
#: A test's outcome line in pytest -v output: `tests/x.py::test_y[z] PASSED  [ 12%]`.
_OUTCOME_LINE = re.compile(r"::\S+ (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", re.MULTILINE)


class Status(enum.Enum):
    OK = "ok"
    NOT_FETCHED = "kernel not available"
    NO_BOOT = "did not boot"
    TIMED_OUT = "timed out"
    CRASHED = "stopped during the tests"
    INTERRUPTED = "interrupted"
    PYTEST_ERROR = "pytest could not run the tests"


@dataclass
class KernelRun:
    """What one kernel made of the suite. `results` is None when no junit XML came back."""

    name: str
    release: str
    status: Status
    detail: str = ""
    boot_s: float | None = None
    test_s: float | None = None
    total_s: float | None = None
    results: list[junit.TestResult] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True)
class Settings:
    """How to run the suite: where the project is, what to run, how long to wait, how big a VM."""

    repo: Path
    python: Path
    pytest_args: Sequence[str]  # after `python -m pytest -m MARKERS`, but the junit output
    outdir: Path  # shared with the guest, writable; per-kernel logs and junit XML land here
    timeout_s: float
    shares: Sequence[Share] = ()  # read-only directories the guest mounts cached (see shares.py)
    host_markers: str = "root"  # the marker expression that selects the tests, on the host
    guest_markers: str = "root"  # and in a VM
    memory: str = "2G"
    cpus: int = 2
    kvm: bool = False
    heartbeat_s: float = 60  # how often a run says how far it has got


class _Files:
    """The files one run leaves in the shared directory, named after the kernel's column."""

    def __init__(self, outdir: Path, name: str):
        self.script = outdir / f"{name}.sh"
        self.started = outdir / f"{name}.started"
        self.exit = outdir / f"{name}.exit"
        self.junit = outdir / f"{name}.xml"
        self.pytest_log = outdir / f"{name}.pytest.log"
        self.console_log = outdir / f"{name}.console.log"

    def clear(self) -> None:
        for path in vars(self).values():
            path.unlink(missing_ok=True)


#: Set in a VM's environment: the tests then scale their traffic down to what software emulation runs in
#: their time (tests/support/emulation.py); every figure stays exact, on fewer events.
EMULATED = "GESPANN_TEST_EMULATED"


def guest_script(settings: Settings, files: _Files, markers: str, prologue: Sequence[str] = (),
                 emulated: bool = False) -> str:
    """The POSIX shell script that runs the tests `markers` selects and leaves its markers, after `prologue`;
    `emulated`: in a VM, which the tests are told (EMULATED)."""
    pytest = [str(settings.python), "-m", "pytest", "-m", markers, *settings.pytest_args,
              "-p", "no:cacheprovider", f"--junitxml={files.junit}"]
    return "\n".join([
        *prologue,
        f"cd {_quote(settings.repo)} || exit 1",
        f": > {_quote(files.started)}",
        # The host's root is read-only in the guest: no bytecode caches to write.
        f"{EMULATED + '=1 ' if emulated else ''}PYTHONDONTWRITEBYTECODE=1 {shlex.join(pytest)} "
        f"> {_quote(files.pytest_log)} 2>&1",
        f"echo $? > {_quote(files.exit)}",
    ])


def run(target: Target, settings: Settings, virtme: VirtmeNg, say: Callable[[str], None],
        stop: threading.Event | None = None) -> KernelRun:
    """Run the suite on `target` and tell what came of it; never raises for what the kernel does.
    Setting `stop` (from another thread) ends the run early."""
    files = _Files(settings.outdir, target.name)
    files.clear()
    modules = [Share(target.modules)] if target.modules else []
    exported = [*settings.shares, *modules, Share(settings.outdir, writable=True)]
    prologue = [] if target.is_host else shares.mount_commands(exported)
    # A file, not --exec's text: vng passes that on the kernel's command line, which holds 2 KiB.
    # The guest reads it through the host's root before the shares are mounted.
    markers = settings.host_markers if target.is_host else settings.guest_markers
    files.script.write_text(guest_script(settings, files, markers, prologue, emulated=not target.is_host) + "\n")
    script = f"sh {_quote(files.script)}"
    if target.is_host:
        say("running the tests on the host")
        argv, env = ["sh", "-c", script], None
    else:
        say(f"booting {target.release}")
        argv = virtme.command(target.vmlinuz, script, shares.qemu_options(exported),
                              memory=settings.memory, cpus=settings.cpus, kvm=settings.kvm)
        env = virtme.env()
    started = time.time()
    with open(files.console_log, "w") as console:
        cut_short = _run_with_deadline(argv, env, console, settings.timeout_s, stop or threading.Event(),
                                       lambda: say(_how_far(files, started)), settings.heartbeat_s)
    total = time.time() - started
    return _outcome(target, files, started, total, cut_short, settings.timeout_s)


def _how_far(files: _Files, started: float) -> str:
    """A progress line for a run still going: booting, or how many tests have reported."""
    elapsed = time.time() - started
    if not files.started.exists():
        return f"not booted yet after {elapsed:.0f} s"
    try:
        done = len(_OUTCOME_LINE.findall(files.pytest_log.read_text(errors="replace")))
    except OSError:
        done = 0
    return f"{done} tests done after {elapsed:.0f} s"


def _run_with_deadline(argv: list[str], env: dict | None, console, timeout_s: float,
                       stop: threading.Event, heartbeat: Callable[[], None] = lambda: None,
                       heartbeat_s: float = 60) -> Status | None:
    """Run `argv` in a session of its own, calling `heartbeat` every `heartbeat_s`. At the deadline,
    or when `stop` is set, end all of it (vng and its qemu) and say which of the two it was; None if
    it ended by itself."""
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=console,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    next_beat = time.monotonic() + heartbeat_s
    cut_short = None
    try:
        while process.poll() is None and cut_short is None:
            if stop.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
                cut_short = Status.INTERRUPTED
            elif time.monotonic() >= deadline:
                cut_short = Status.TIMED_OUT
            elif time.monotonic() >= next_beat:
                heartbeat()
                next_beat += heartbeat_s
        if cut_short is not None:
            _signal_session(process, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return cut_short
    finally:  # whatever happened, no VM outlives its run
        _signal_session(process, signal.SIGKILL)
        process.wait()


def _signal_session(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _outcome(target: Target, files: _Files, started: float, total: float, cut_short: Status | None,
             timeout_s: float) -> KernelRun:
    run = KernelRun(target.name, target.release, Status.OK, total_s=total,
                    logs=[p for p in (files.console_log, files.pytest_log) if p.exists() and p.stat().st_size])
    booted_at = _mtime(files.started)
    ended_at = _mtime(files.exit)
    unreadable = ""
    if booted_at is not None and not target.is_host:
        run.boot_s = booted_at - started
    if booted_at is not None and ended_at is not None:
        run.test_s = ended_at - booted_at
    if files.junit.exists():
        try:
            run.results = junit.parse(files.junit)
        except junit.ParseError as err:  # truncated: the guest stopped while pytest wrote it
            unreadable = f"{files.junit.name} is unreadable: {err}\n"
    if cut_short is not None:
        run.status = cut_short
        where = "during the tests" if booted_at is not None else "before the tests started"
        log = files.pytest_log if booted_at is not None else files.console_log
        after = f" after {timeout_s:.0f} s" if cut_short is Status.TIMED_OUT else ""
        run.detail = f"stopped{after}, {where}\n{tail(log)}"
    elif booted_at is None:
        run.status = Status.NO_BOOT
        run.detail = tail(files.console_log)
    elif ended_at is None:
        run.status = Status.CRASHED
        run.detail = tail(files.console_log)
    else:
        code = _read_int(files.exit)
        if code not in _TESTS_RAN or run.results is None:
            run.status = Status.PYTEST_ERROR
            run.detail = f"{unreadable}pytest exited with status {code}\n{tail(files.pytest_log)}"
    return run


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return f"({path.name} is missing)"


def _quote(path: Path) -> str:
    return shlex.quote(str(path))


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
