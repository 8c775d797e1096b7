"""Kprobe perf events: made by the kprobe PMU, or written into tracefs kprobe_events where there is none.

A KPROBE program hangs off a perf event, as a tracepoint program does. Since
4.17 perf_event_open makes the kprobe itself (the kprobe PMU, whose event type
sysfs lists), and the kprobe goes when the fd closes. Without the PMU the
kprobe is a line written into tracefs kprobe_events, opened as a tracepoint by
its id. That kprobe outlives the fd, so `TracefsKprobe.close()` removes it.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import os
import time
from typing import Optional

from . import perf_event, tracefs
from .errors import BPFError, PermissionDeniedError, SymbolNotFoundError, describe_errno
from .fd import Closable, Fd
from .perf_event import PerfEventAttr

PMU_DIR = "/sys/bus/event_source/devices/kprobe"
#: tracefs kprobe events gespann makes are called gespann_<pid>_<n>, in tracefs's default group.
EVENT_PREFIX = "gespann"
GROUP = "kprobes"

# Errnos meaning "no such function to probe": ENOENT (not in kallsyms), EADDRNOTAVAIL (not unique, 6.5+).
_NOT_FOUND = (errno.ENOENT, errno.EADDRNOTAVAIL)
_REMOVE_TIMEOUT = 2.0  # seconds: a kprobe event is busy until the kernel has released its perf event


def pmu_type(pmu_dir: str = PMU_DIR) -> Optional[int]:
    """The kprobe PMU's perf event type, or None if the kernel has no kprobe PMU."""
    try:
        return int(_read(os.path.join(pmu_dir, "type")))
    except FileNotFoundError:
        return None


def retprobe_bit(pmu_dir: str = PMU_DIR) -> int:
    """The bit of perf_event_attr.config that makes a kprobe PMU event a kretprobe (format/retprobe
    reads `config:0`)."""
    path = os.path.join(pmu_dir, "format", "retprobe")
    field, _, bit = _read(path).strip().partition(":")
    if field != "config" or not bit.isdigit():
        raise BPFError(f"{path}: expected config:<bit>, read {field}:{bit}")
    return int(bit)


def open_pmu_kprobe(symbol: str, retprobe: bool = False, offset: int = 0) -> Fd:
    """A perf event that is a new kprobe on `symbol` (+`offset`), or a kretprobe; on CPU 0, which is
    enough for BPF: an attached program runs on every CPU."""
    pmu = pmu_type()
    if pmu is None:
        raise BPFError(f"kernel {os.uname().release} has no kprobe PMU ({PMU_DIR})", errno.ENOENT)
    name = ctypes.create_string_buffer(symbol.encode())  # the kernel copies it during the call
    attr = PerfEventAttr(type=pmu, config=(1 << retprobe_bit()) if retprobe else 0, config1=ctypes.addressof(name),
                         config2=offset, sample_period=1, wakeup_events=1)
    try:
        return perf_event.perf_event_open(attr, pid=-1, cpu=0)
    except BPFError as e:
        if e.errno in _NOT_FOUND:
            raise SymbolNotFoundError(symbol, e.errno) from None
        raise


def kprobe_events_path(root: Optional[str] = None) -> str:
    return os.path.join(root or tracefs.tracefs_root(), "kprobe_events")


class TracefsKprobe(Closable):
    """A kprobe made in tracefs kprobe_events; `open()` gives its perf event, `close()` removes it.

    Close the perf event first: the kernel refuses to remove an event in use.
    """

    _serial = itertools.count()

    def __init__(self, symbol: str, retprobe: bool = False, offset: int = 0, root: Optional[str] = None):
        self.root, self.symbol = root or tracefs.tracefs_root(), symbol
        self.path = kprobe_events_path(self.root)
        self.removed = False
        self.name = self._create(f"r:{GROUP}/{{name}} {symbol}" if retprobe else
                                 f"p:{GROUP}/{{name}} {symbol}+{offset}")

    def _create(self, definition: str) -> str:
        """Write `definition` under a fresh name; a name another process took (EEXIST) is skipped."""
        while True:
            name = f"{EVENT_PREFIX}_{os.getpid()}_{next(self._serial)}"
            try:
                self._write(definition.format(name=name))
                return name
            except OSError as e:
                if e.errno == errno.EEXIST:
                    continue
                raise self._error(f"writing {definition.format(name=name)!r} to {self.path}", e,
                                  creating=True) from None

    @property
    def id(self) -> int:
        """The event's tracepoint id, the perf event config that opens it."""
        path = os.path.join(self.root, "events", GROUP, self.name, "id")
        try:
            return int(_read(path))
        except OSError as e:
            raise self._error(f"reading {path}", e) from None

    def open(self) -> Fd:
        """The event's perf event (a tracepoint perf event of this kprobe's id), on CPU 0."""
        attr = PerfEventAttr(type=perf_event.PERF_TYPE_TRACEPOINT, config=self.id, sample_period=1, wakeup_events=1)
        return perf_event.perf_event_open(attr, pid=-1, cpu=0)

    def close(self) -> None:
        """Remove the event. It stays busy (EBUSY) until the kernel has let go of its last perf
        event, which a just-closed bpf_link may do a moment later."""
        if self.removed:
            return
        deadline = time.monotonic() + _REMOVE_TIMEOUT
        while True:
            try:
                self._write(f"-:{GROUP}/{self.name}")
                break
            except OSError as e:
                if e.errno == errno.ENOENT:
                    break  # removed by someone else
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise self._error(f"removing kprobe event {GROUP}/{self.name} from {self.path}", e) from None
                time.sleep(0.005)
        self.removed = True

    def _write(self, line: str) -> None:
        """Append one command; opening kprobe_events without O_APPEND would delete every kprobe event."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)

    def _error(self, operation: str, error: OSError, creating: bool = False) -> BPFError:
        if error.errno in (errno.EPERM, errno.EACCES):
            return PermissionDeniedError(operation, ("CAP_SYS_ADMIN",), error.errno)
        if creating and error.errno in (*_NOT_FOUND, errno.EINVAL):
            # 5.x says EINVAL for an unknown function as for one it may not probe.
            return SymbolNotFoundError(self.symbol, error.errno, self._last_logged_error())
        return BPFError(f"{operation}: {describe_errno(error.errno)}", error.errno)

    def _last_logged_error(self) -> str:
        """The last error tracefs's error_log (5.4+) holds, which says what was wrong with a line."""
        try:
            lines = _read(os.path.join(self.root, "error_log")).splitlines()
        except OSError:
            return ""
        return next((line.split("error:", 1)[1].strip() for line in reversed(lines) if "error:" in line), "")

    def __repr__(self) -> str:
        state = ", removed" if self.removed else ""
        return f"TracefsKprobe({GROUP}/{self.name} on {self.symbol}{state})"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
