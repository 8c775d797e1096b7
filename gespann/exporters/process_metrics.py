"""gespann's own CPU, memory and file descriptors, as the `process_*` families every Prometheus exporter serves.

The names and meanings are the conventional ones (dashboards for any exporter
read them); the figures come from /proc/self at each scrape. Where /proc
cannot be read the families are left out, never guessed.
"""

from __future__ import annotations

import os
import resource
from typing import Optional

from gespann.collector import Kind

from .exposition import Family

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class ProcessMetrics:
    """Families for this process; the start time is read once, the rest at every scrape."""

    def __init__(self, proc: str = "/proc"):
        self._proc = proc
        self._start_time: Optional[float] = self._read_start_time()

    def families(self) -> list[Family]:
        try:
            fields = self._stat_fields()
            open_fds = len(os.listdir(f"{self._proc}/self/fd"))
        except (OSError, ValueError, IndexError):
            return []
        utime, stime, vsize, rss_pages = int(fields[11]), int(fields[12]), int(fields[20]), int(fields[21])
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        found = [
            _one("process_cpu_seconds_total", Kind.COUNTER, "CPU time spent by gespann, user and system, in seconds.",
                 (utime + stime) / _TICKS_PER_SECOND),
            _one("process_virtual_memory_bytes", Kind.GAUGE, "gespann's virtual memory size, in bytes.", vsize),
            _one("process_resident_memory_bytes", Kind.GAUGE, "gespann's resident memory, in bytes.",
                 rss_pages * _PAGE_BYTES),
            _one("process_open_fds", Kind.GAUGE, "File descriptors gespann holds open.", open_fds),
        ]
        if soft_limit != resource.RLIM_INFINITY:
            found.append(_one("process_max_fds", Kind.GAUGE, "The most file descriptors gespann may open.",
                              soft_limit))
        if self._start_time is not None:
            found.append(_one("process_start_time_seconds", Kind.GAUGE,
                              "When gespann started, in seconds since the Unix epoch.", self._start_time))
        return found

    def _stat_fields(self) -> list[str]:
        """The fields of /proc/self/stat after the command name (which may hold spaces and parentheses):
        index 0 is the state, field 3 in proc(5)."""
        with open(f"{self._proc}/self/stat") as stat:
            text = stat.read()
        return text[text.rindex(")") + 2:].split()

    def _read_start_time(self) -> Optional[float]:
        try:
            with open(f"{self._proc}/stat") as stat:
                boot = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
            return boot + int(self._stat_fields()[19]) / _TICKS_PER_SECOND
        except (OSError, ValueError, IndexError, StopIteration):
            return None


def _one(name: str, kind: Kind, help: str, value: float) -> Family:
    return Family(name, kind, help, {(): value})
