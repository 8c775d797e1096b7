"""Attaching programs to tracepoints; a Link detaches when closed.

A tracepoint program hangs off a perf event opened for the tracepoint's id.
Since 5.15 a bpf_link owns that attachment; before, the program is set on the
perf event with an ioctl. Both end when their fds close, so nothing stays
attached after the process exits. Kprobe and fentry attachment will join
these as further modes.
"""
from __future__ import annotations

import enum
import errno
from typing import Optional

from . import features, perf_event, syscall, tracefs
from .errors import BPFError, FeatureUnsupportedError, TracepointNotFoundError
from .fd import Closable, Fd
from .perf_event import PerfEventAttr
from .programs import LoadedProgram
from .syscall import AttachType


class AttachMode(enum.Enum):
    LINK = "bpf_link"                       # BPF_LINK_CREATE on a perf event (5.15+)
    PERF_IOCTL = "perf_event_ioctl"         # PERF_EVENT_IOC_SET_BPF + PERF_EVENT_IOC_ENABLE
    RAW_TRACEPOINT = "raw_tracepoint_open"  # BPF_RAW_TRACEPOINT_OPEN (4.17+)


class Link(Closable):
    """One attachment of a program: `mode` says which path was taken, `close()` detaches.

    The attachment holds the program in the kernel until it closes, even
    after the LoadedProgram is closed.
    """

    def __init__(self, program: LoadedProgram, target: str, mode: AttachMode,
                 link_fd: Optional[Fd] = None, perf_fd: Optional[Fd] = None):
        self.program_name, self.target, self.mode = program.name, target, mode
        self._link_fd, self._perf_fd = link_fd, perf_fd

    def close(self) -> None:
        if self._link_fd is not None:
            self._link_fd.close()
        if self._perf_fd is not None and not self._perf_fd.closed:
            try:
                if self.mode is AttachMode.PERF_IOCTL:
                    perf_event.perf_event_ioctl(int(self._perf_fd), perf_event.PERF_EVENT_IOC_DISABLE)
            finally:
                self._perf_fd.close()

    def __repr__(self) -> str:
        return f"Link({self.program_name!r} -> {self.target}, {self.mode.value})"


def attach_tracepoint(program: LoadedProgram, category: str, name: str,
                      mode: Optional[AttachMode] = None) -> Link:
    """Attach a TRACEPOINT program to `category:name`.

    By default a bpf_link is used where the kernel has one for perf events,
    the ioctl otherwise; `mode` forces either. The program runs for events on
    every CPU although the perf event is opened on CPU 0 only.
    """
    if mode is None:
        mode = AttachMode.LINK if features.has_perf_link() else AttachMode.PERF_IOCTL
    elif mode is AttachMode.LINK and not features.has_perf_link():
        raise FeatureUnsupportedError("bpf_link for perf events", features.PERF_LINK_SINCE)
    if mode not in (AttachMode.LINK, AttachMode.PERF_IOCTL):
        raise ValueError(f"a tracepoint attaches through {AttachMode.LINK} or {AttachMode.PERF_IOCTL}, not {mode}")
    tp = tracefs.read_format(category, name)
    attr = PerfEventAttr(type=perf_event.PERF_TYPE_TRACEPOINT, config=tp.id, sample_period=1, wakeup_events=1)
    perf_fd = perf_event.perf_event_open(attr, pid=-1, cpu=0)
    try:
        if mode is AttachMode.LINK:
            return Link(program, f"{category}:{name}", mode,
                        link_fd=syscall.bpf_link_create(int(program.fd), int(perf_fd), AttachType.PERF_EVENT),
                        perf_fd=perf_fd)
        perf_event.perf_event_ioctl(int(perf_fd), perf_event.PERF_EVENT_IOC_SET_BPF, int(program.fd))
        perf_event.perf_event_ioctl(int(perf_fd), perf_event.PERF_EVENT_IOC_ENABLE)
        return Link(program, f"{category}:{name}", mode, perf_fd=perf_fd)
    except BaseException:
        perf_fd.close()
        raise


def attach_raw_tracepoint(program: LoadedProgram, name: str) -> Link:
    """Attach a RAW_TRACEPOINT program to tracepoint `name` (no category: `inet_sock_set_state`).
    Its context is the tracepoint's raw arguments (u64 each), not the formatted record."""
    try:
        link_fd = syscall.bpf_raw_tracepoint_open(name, int(program.fd))
    except BPFError as e:
        if e.errno == errno.ENOENT:
            raise TracepointNotFoundError("raw_tp", name) from None
        raise
    return Link(program, f"raw_tp:{name}", AttachMode.RAW_TRACEPOINT, link_fd=link_fd)
