"""gespann's trace mode (`gespann trace --json`: a record per connection through the ring buffer), when this
build has it.

Whether it exists is asked of the build at run time (`gespann trace --help`);
without it the result says so and nothing is measured. With it, the records
go to a file; the process counts as ready once the kernel shows as many
programs attached by it as `gespann run` attaches. Losses are counted without
assuming the record schema: a slow run (one client thread, few connections)
calibrates how many records one connection gives, and at the highest rate
anything short of that many per connection was lost. A count of lost records
that gespann reports itself (a JSON field or a log line naming "lost") is kept
beside it.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import bpfstats
from .process import Launched, Startup

NOT_AVAILABLE = "trace mode: not available in this build"
STARTUP_TIMEOUT_S = 120
#: "gespann: 12 connection records were lost (...)", or "lost: 12".
_LOST = re.compile(r"(\d+)[^\d\n]{0,40}\blost\b|\blost\b[^\d\n]{0,40}?(\d+)", re.IGNORECASE)
#: After the workload, how long the record count may stay unchanged before the stream counts as drained.
QUIET_S = 1.5
DRAIN_LIMIT_S = 60


def available(executable: Path) -> bool:
    """True when `gespann trace --json` is a command of this build."""
    done = subprocess.run([str(executable), "trace", "--help"], capture_output=True, text=True, check=False,
                          timeout=120)
    return done.returncode == 0 and "--json" in done.stdout


@dataclass(frozen=True)
class RecordCount:
    records: int
    reported_lost: int | None  # what gespann itself said it lost, if it said


def count_records(stream: str, log: str = "") -> RecordCount:
    """Records (JSON objects, one a line) in `stream`; gespann's own loss figure from either text."""
    records, lost = 0, None
    for line in stream.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        found = [v for k, v in record.items() if "lost" in k.lower() and isinstance(v, int)]
        if found:
            lost = max(found)
        else:
            records += 1
    for match in _LOST.finditer(log):
        lost = max(lost or 0, int(match[1] or match[2]))
    return RecordCount(records, lost)


def missing(records: int, connections: int, per_connection: float) -> int:
    """Records short of `per_connection` for each of `connections`."""
    return max(0, round(connections * per_connection) - records)


class GespannTrace:
    def __init__(self, executable: Path, workdir: Path, config: Path, programs: int):
        self.executable = executable
        self.config = config
        self.programs = programs  # how many programs `gespann run` attaches: ready when as many are
        self.stream = workdir / "trace.jsonl"

    def start(self) -> tuple[Launched, Startup]:
        launched = Launched([str(self.executable), "trace", "--json", "--config", str(self.config)],
                            stdout_path=str(self.stream))
        try:
            startup = launched.wait_ready(
                lambda: len(bpfstats.attachments(bpfstats.bpftool_json("perf", "show"), launched.pid))
                >= self.programs, STARTUP_TIMEOUT_S, interval_s=0.05)
        except BaseException:
            launched.stop()
            raise
        return launched, startup

    def drain(self, expected: int) -> None:
        """Wait until `expected` records are out, or none came for QUIET_S (bounded by DRAIN_LIMIT_S):
        records still queued when gespann stops would be neither printed nor counted as lost."""
        deadline, last, quiet_since = time.monotonic() + DRAIN_LIMIT_S, -1, time.monotonic()
        while time.monotonic() < deadline:
            size = self.stream.stat().st_size
            if size != last:
                last, quiet_since = size, time.monotonic()
            elif time.monotonic() - quiet_since > QUIET_S or self._lines() >= expected:
                return
            time.sleep(0.25)

    def _lines(self) -> int:
        with open(self.stream, "rb") as f:
            return sum(1 for _ in f)

    def records(self, launched: Launched) -> RecordCount:
        return count_records(self.stream.read_text(errors="replace"), launched.output())
