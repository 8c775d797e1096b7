"""Probes of what the running kernel supports, each run once and remembered.

Each probe asks the kernel directly instead of comparing version numbers, so
backports count. The release that added a feature is noted for messages.
"""
from __future__ import annotations

import errno
import functools

from . import syscall
from .errors import BPFError
from .memory import PAGE_SIZE
from .syscall import AttachType, MapType, ProgType

RING_BUFFER_SINCE = "5.8"
PERF_LINK_SINCE = "5.15"

# r0 = 0; exit
_RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")


@functools.cache
def has_ringbuf() -> bool:
    """BPF_MAP_TYPE_RINGBUF (5.8): creating a one-page ring buffer succeeds."""
    try:
        syscall.bpf_map_create(MapType.RINGBUF, 0, 0, PAGE_SIZE, name="probe_ringbuf").close()
    except BPFError as e:
        if e.errno == errno.EINVAL:
            return False
        raise
    return True


@functools.cache
def has_perf_link() -> bool:
    """BPF_LINK_CREATE for perf events (5.15): given no perf event (fd -1), a kernel that knows
    the attach type looks the fd up and says EBADF; an older one rejects the attach type (EINVAL)."""
    prog = syscall.bpf_prog_load(ProgType.TRACEPOINT, _RETURN_ZERO, name="probe_perf_link")
    try:
        syscall.bpf_link_create(int(prog), -1, AttachType.PERF_EVENT).close()
    except BPFError as e:
        if e.errno == errno.EBADF:
            return True
        if e.errno == errno.EINVAL:
            return False
        raise
    finally:
        prog.close()
    return True  # pragma: no cover - fd -1 never names a perf event
