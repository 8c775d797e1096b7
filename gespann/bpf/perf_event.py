"""perf_event_open(2) and the ioctls on perf event fds, through ctypes.

Tracepoint and kprobe programs hang off perf events, and perf buffers are perf events
of the BPF output kind; both are opened here.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl

from .fd import Fd
from .syscall import NR_PERF_EVENT_OPEN, libc, syscall_error

PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
PERF_EVENT_IOC_ENABLE = 0x2400               # _IO('$', 0)
PERF_EVENT_IOC_DISABLE = 0x2401              # _IO('$', 1)
PERF_EVENT_IOC_SET_BPF = 0x40042408          # _IOW('$', 8, __u32)


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to sig_data (PERF_ATTR_SIZE_VER7); `flags` holds the bitfield word."""
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64), ("config2", ctypes.c_uint64),
                ("branch_sample_type", ctypes.c_uint64), ("sample_regs_user", ctypes.c_uint64),
                ("sample_stack_user", ctypes.c_uint32), ("clockid", ctypes.c_int32),
                ("sample_regs_intr", ctypes.c_uint64), ("aux_watermark", ctypes.c_uint32),
                ("sample_max_stack", ctypes.c_uint16), ("_reserved_2", ctypes.c_uint16),
                ("aux_sample_size", ctypes.c_uint32), ("aux_action", ctypes.c_uint32),
                ("sig_data", ctypes.c_uint64)]

    def __init__(self, **fields):
        super().__init__(size=ctypes.sizeof(PerfEventAttr), **fields)


_NEEDS_PERFMON = ("CAP_PERFMON",)


def perf_event_open(attr: PerfEventAttr, pid: int, cpu: int, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC) -> Fd:
    """perf_event_open(2); EPERM/EACCES name CAP_PERFMON (kernel.perf_event_paranoid also applies)."""
    while True:
        ret = libc.syscall(ctypes.c_long(NR_PERF_EVENT_OPEN), ctypes.byref(attr), ctypes.c_int(pid),
                           ctypes.c_int(cpu), ctypes.c_int(group_fd), ctypes.c_ulong(flags))
        if ret >= 0:
            return Fd(ret)
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise syscall_error(f"perf_event_open(type={attr.type}, config={attr.config}, cpu={cpu})",
                                err, _NEEDS_PERFMON)


def perf_event_ioctl(fd: int, request: int, arg: int = 0) -> None:
    """An ioctl on a perf event fd: ENABLE, DISABLE, or SET_BPF with a program fd."""
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise syscall_error(f"ioctl(perf event, {request:#x})", e.errno, _NEEDS_PERFMON) from None
