"""What the kernel accounts for a running process: CPU time and peak resident memory, from /proc.

CPU time is utime + stime of /proc/PID/stat, which includes threads that have
already exited, in clock ticks (10 ms at the usual 100 Hz); peak RSS is VmHWM
of /proc/PID/status, the high-water mark of the whole process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system, every thread so far
    user_s: float
    system_s: float
    peak_rss_bytes: int


def parse_stat(text: str, ticks_per_second: int = TICKS_PER_SECOND) -> tuple[float, float]:
    """(user, system) seconds from a /proc/PID/stat line; comm may hold blanks and parentheses."""
    fields = text[text.rindex(")") + 2:].split()
    # after "pid (comm) ": state is field 3 of proc(5), utime 14, stime 15
    utime, stime = int(fields[11]), int(fields[12])
    return utime / ticks_per_second, stime / ticks_per_second


def parse_peak_rss(status: str) -> int:
    """VmHWM of a /proc/PID/status text, in bytes."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            number, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected unit in {line!r}")
            return int(number) * 1024
    raise ValueError("no VmHWM line in /proc/PID/status")


def usage(pid: int) -> Usage:
    """The process's CPU and peak RSS now; raises ProcessLookupError once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            user, system = parse_stat(f.read())
        with open(f"/proc/{pid}/status") as f:
            peak = parse_peak_rss(f.read())
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return Usage(user + system, user, system, peak)


@dataclass(frozen=True)
class CpuSample:
    """The process's CPU time two ways: per live thread in ns (schedstat), and in all in ticks (stat)."""

    threads_ns: dict[int, int]
    total_s: float


def parse_schedstat(text: str) -> int:
    """Nanoseconds on CPU: the first field of /proc/PID/task/TID/schedstat."""
    return int(text.split()[0])


def cpu_sample(pid: int) -> CpuSample:
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        total = usage(pid).cpu_s
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[int(tid)] = parse_schedstat(f.read())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return CpuSample(threads, total)


def cpu_between(before: CpuSample, after: CpuSample) -> float:
    """CPU seconds spent between two samples: to the nanosecond when no thread ended in between
    (a thread that started is counted whole), else from the ticks, which keep ended threads' time."""
    if not set(before.threads_ns) <= set(after.threads_ns):
        return after.total_s - before.total_s
    return sum(ns - before.threads_ns.get(tid, 0) for tid, ns in after.threads_ns.items()) / 1e9


def irq_work_interrupts(interrupts: str | None = None) -> int:
    """IRQ-work interrupts so far, all CPUs added up (the IWI line of /proc/interrupts): how a BPF
    program's perf or ring buffer output wakes its reader, one interrupt per wakeup. Host-wide."""
    if interrupts is None:
        with open("/proc/interrupts") as f:
            interrupts = f.read()
    for line in interrupts.splitlines():
        words = line.split()
        if words[:1] == ["IWI:"]:
            return sum(int(w) for w in words[1:] if w.isdigit())
    return 0


def parse_voluntary_switches(status: str) -> int:
    """voluntary_ctxt_switches of a /proc/PID/task/TID/status text: how often the thread slept and was woken."""
    for line in status.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of the process's live threads, added up: for a tracer's reader, its
    wakeups (threads that ended meanwhile are not counted)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += parse_voluntary_switches(f.read())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
