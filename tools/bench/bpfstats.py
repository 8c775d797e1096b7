"""In-kernel cost: the kernel's own run_cnt and run_time_ns of a tracer's programs, per tracepoint.

Which programs belong to which process, and on which tracepoint each runs, is
`bpftool perf show -j` (every perf-event and raw-tracepoint attachment, with
the owning pid); the counters are `bpftool prog show -j`. The kernel counts
only while statistics are on: BPF_ENABLE_STATS through gespann's own bpf layer
(`enable_run_stats`), which leaves the kernel.bpf_stats_enabled sysctl alone and
ends with the bench's process, so a crash cannot leave the overhead on.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass


class StatsError(RuntimeError):
    """bpftool failed or said something unreadable."""


@dataclass(frozen=True)
class ProgramRuns:
    prog_id: int
    tracepoint: str
    run_cnt: int
    run_time_ns: int
    name: str = ""  # the kernel's object name (15 characters at most)


@dataclass(frozen=True)
class Cost:
    """What one tracepoint's programs cost over a window: runs, and nanoseconds per run."""

    tracepoint: str
    runs: int
    run_time_ns: int

    @property
    def ns_per_run(self) -> float | None:
        return self.run_time_ns / self.runs if self.runs else None


def attachments(perf_show: list[dict], pid: int) -> dict[int, str]:
    """prog_id -> tracepoint name, for the programs process `pid` attached (bpftool perf show -j)."""
    return {entry["prog_id"]: entry["tracepoint"] for entry in perf_show
            if entry.get("pid") == pid and "tracepoint" in entry and "prog_id" in entry}


def program_runs(prog_show: list[dict], attached: Mapping[int, str]) -> list[ProgramRuns]:
    """The counters of the `attached` programs (bpftool prog show -j); absent counters are 0."""
    return [ProgramRuns(p["id"], attached[p["id"]], p.get("run_cnt", 0), p.get("run_time_ns", 0), p.get("name", ""))
            for p in prog_show if p.get("id") in attached]


def costs(before: list[ProgramRuns], after: list[ProgramRuns]) -> dict[str, Cost]:
    """Per tracepoint, what ran between two snapshots (programs on one tracepoint added up)."""
    earlier = {p.prog_id: p for p in before}
    totals: dict[str, list[int]] = {}
    for prog in after:
        start = earlier.get(prog.prog_id, ProgramRuns(prog.prog_id, prog.tracepoint, 0, 0))
        runs, time_ns = totals.setdefault(prog.tracepoint, [0, 0])
        totals[prog.tracepoint] = [runs + prog.run_cnt - start.run_cnt, time_ns + prog.run_time_ns - start.run_time_ns]
    return {tp: Cost(tp, runs, time_ns) for tp, (runs, time_ns) in sorted(totals.items())}


def program_costs(before: list[ProgramRuns], after: list[ProgramRuns]) -> dict[str, dict]:
    """Per program (by its kernel name), its tracepoint, runs and run time between two snapshots; programs
    of one name added up."""
    earlier = {p.prog_id: p for p in before}
    out: dict[str, dict] = {}
    for prog in after:
        start = earlier.get(prog.prog_id, ProgramRuns(prog.prog_id, prog.tracepoint, 0, 0))
        row = out.setdefault(prog.name or str(prog.prog_id), {"tracepoint": prog.tracepoint, "runs": 0,
                                                               "run_time_ns": 0})
        row["runs"] += prog.run_cnt - start.run_cnt
        row["run_time_ns"] += prog.run_time_ns - start.run_time_ns
    return dict(sorted(out.items()))


def snapshot(pid: int) -> list[ProgramRuns]:
    """The counters of `pid`'s attached programs now."""
    return program_runs(bpftool_json("prog", "show"), attachments(bpftool_json("perf", "show"), pid))


def bpftool_json(*command: str) -> list[dict]:
    done = subprocess.run(["bpftool", "-j", *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StatsError(f"bpftool {' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    try:
        return json.loads(done.stdout or "[]")
    except ValueError as err:
        raise StatsError(f"bpftool {' '.join(command)} printed no JSON: {err}") from None
