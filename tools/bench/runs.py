"""One measured run: a tracer started, the workload run once under it, the tracer stopped.

Each run yields the figures of one round for one tracer: start-up (wall, CPU),
the workload's rate, the tracer's CPU over the workload, its peak RSS, what it
counted, and, when the caller holds BPF run statistics on, its programs' run
counts and run time per tracepoint over the workload. Tracers with records (gespann's trace
mode, libbpf-tools, bcc) also give their records, the losses, and the IRQ-work interrupts over
the workload (one per wakeup of a reader by its programs).
"""
from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import bcc_tracer, bpfstats, libbpf_tools, loadgen, procfs
from .bcc_tracer import Bcc
from .bpftrace_tracer import Bpftrace
from .counts import Counts
from .gespann_tracer import GespannMetrics, btf_child, probes_attached
from .libbpf_tools import LibbpfTool
from .process import Launched
from .trace_mode import GespannTrace

#: How long gespann's counters may take to show the last connections' ends after the workload returns.
SETTLE_S = 5
#: How long a libbpf-tools tool is given after the workload to print what its perf buffer still holds.
DRAIN_S = 1


@dataclass(frozen=True)
class Workload:
    binary: Path
    connections: int
    seconds: float
    threads: int
    prefix: tuple[str, ...]  # `ip netns exec NAME`
    udp: int = 0  # UDP datagrams echoed per connection: 0 for the TCP-only workload

    def run(self, connections: int | None = None, threads: int | None = None, rate: float = 0) -> loadgen.LoadResult:
        return loadgen.run(self.binary, connections or self.connections, self.seconds, threads or self.threads,
                           list(self.prefix), rate=rate, udp=self.udp)


def rotated(order: list[str], index: int) -> list[str]:
    """Round `index`'s turn: each tracer takes each position in turn, so no one always runs first."""
    shift = index % len(order)
    return order[shift:] + order[:shift]


def baseline(workload: Workload) -> dict:
    load = workload.run()
    return {"rate": load.per_second, "connections": load.connections,
            "load_cpu_us_per_connection": load.cpu_us_per_connection}


def _measure(launched: Launched, workload: Workload, stats: bool, connections: int | None = None,
             threads: int | None = None, rate: float = 0) -> tuple[dict, loadgen.LoadResult]:
    """The workload under `launched`: rate, CPU over it, IRQ-work interrupts (host-wide), the tracer's own
    wakeups (voluntary context switches), programs' cost (if `stats`)."""
    runs_before = bpfstats.snapshot(launched.pid) if stats else []
    cpu_before = procfs.cpu_sample(launched.pid)
    irq_work_before, switches_before = procfs.irq_work_interrupts(), procfs.voluntary_switches(launched.pid)
    load = workload.run(connections, threads, rate)
    irq_work = procfs.irq_work_interrupts() - irq_work_before
    wakeups = procfs.voluntary_switches(launched.pid) - switches_before
    cpu_s = procfs.cpu_between(cpu_before, procfs.cpu_sample(launched.pid))
    figures = {"rate": load.per_second, "connections": load.connections, "cpu_s": cpu_s,
               "load_cpu_us_per_connection": load.cpu_us_per_connection, "irq_work": irq_work, "wakeups": wakeups}
    if stats:
        runs_after = bpfstats.snapshot(launched.pid)
        costs = bpfstats.costs(runs_before, runs_after)
        figures["per_tracepoint"] = {tp: {"runs": c.runs, "run_time_ns": c.run_time_ns} for tp, c in costs.items()}
        figures["per_program"] = bpfstats.program_costs(runs_before, runs_after)
    return figures, load


def _startup(figures: dict, startup) -> None:
    figures.update(startup_wall_s=startup.wall_s, startup_cpu_s=startup.cpu_s)


def gespann_metrics(tracer: GespannMetrics, workload: Workload, stats: bool = False) -> dict:
    launched, startup = tracer.start()
    try:
        before = tracer.counts()
        time.sleep(0.3)  # the scrape's handler thread ends, not to be mistaken for work during the load
        figures, load = _measure(launched, workload, stats)
        counted = _settled(lambda: tracer.counts().minus(before), load.connections)
        figures["peak_rss_bytes"] = launched.usage().peak_rss_bytes
    finally:
        launched.stop(signal.SIGTERM)
    _startup(figures, startup)
    figures.update(probes=probes_attached(launched.output()) or "(start-up line not found)", counts=vars(counted),
                   missing=counted.missing(load.connections), counts_match=counted.matches(load.connections))
    return figures


def gespann_cold_start(tracer: GespannMetrics, cache_home: Path) -> dict:
    """`gespann run` started with an empty kernel-types cache (a container whose cache does not persist):
    start-up and peak RSS once its page is served, and what its BTF child took."""
    shutil.rmtree(cache_home, ignore_errors=True)
    launched, startup = tracer.start(env={**os.environ, "XDG_CACHE_HOME": str(cache_home)})
    try:
        figures = {"peak_rss_bytes": launched.usage().peak_rss_bytes}
    finally:
        launched.stop(signal.SIGTERM)
    _startup(figures, startup)
    child = btf_child(launched.output())
    if child is not None:
        figures.update(btf_child_ms=child[0], btf_child_peak_rss_bytes=round(child[1] * 2**20))
    return figures


def _settled(read: Callable[[], Counts], connections: int) -> Counts:
    """The counts once they match `connections`, or as they are after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        counted = read()
        if counted.matches(connections) or time.monotonic() > deadline:
            return counted
        time.sleep(0.1)


def bpftrace(tracer: Bpftrace, workload: Workload, stats: bool = False) -> dict:
    launched, startup, attaching = tracer.start()
    try:
        figures, load = _measure(launched, workload, stats)
        figures["peak_rss_bytes"] = launched.usage().peak_rss_bytes
    finally:
        counted = tracer.stop_and_count(launched)
    _startup(figures, startup)
    figures.update(attaching_line_s=attaching, counts=vars(counted), missing=counted.missing(load.connections),
                   counts_match=counted.matches(load.connections))
    return figures


def bcc(tracer: Bcc, workload: Workload, stats: bool = False) -> dict:
    launched, startup = tracer.start()
    try:
        figures, load = _measure(launched, workload, stats)
        time.sleep(1)  # let it drain its perf buffer to the output file
        figures["peak_rss_bytes"] = launched.usage().peak_rss_bytes
    finally:
        launched.stop(signal.SIGINT)
    _startup(figures, startup)
    figures.update(events=tracer.events(), expected_events=tracer.tool.lines_per_connection * load.connections,
                   reported_lost=bcc_tracer.lost_samples(launched.output()))
    return figures


def gespann_trace(tracer: GespannTrace, workload: Workload, calibration: int = 500) -> dict:
    """Trace mode: a slow run to learn records per connection, then the full rate; losses, and CPU
    from the start of the workload until every record is out."""
    launched, startup = tracer.start()
    try:
        slow = workload.run(calibration, threads=1)
        tracer.drain(expected=10 ** 9)  # unknown yet: until quiet
        per_connection = round(tracer.records(launched).records / slow.connections, 3)
        cpu_before = procfs.cpu_sample(launched.pid)
        load = workload.run()
        expected = round(per_connection * (slow.connections + load.connections))
        tracer.drain(expected)
        cpu_s = procfs.cpu_between(cpu_before, procfs.cpu_sample(launched.pid))
        peak = launched.usage().peak_rss_bytes
    finally:
        launched.stop(signal.SIGTERM)
    counted = tracer.records(launched)
    return {"rate": load.per_second, "connections": load.connections, "cpu_s": cpu_s, "peak_rss_bytes": peak,
            "startup_wall_s": startup.wall_s, "startup_cpu_s": startup.cpu_s, "records": counted.records,
            "expected_records": expected, "per_connection": per_connection,
            "lost": max(0, expected - counted.records), "reported_lost": counted.reported_lost}


def libbpf_tool(tracer: LibbpfTool, workload: Workload, stats: bool = False, rate: float = 0,
                connections: int | None = None) -> dict:
    """A libbpf-tools tool over one workload run: its lines of the bench's connections against the
    expected, what it said it lost, and its CPU from ready until it has printed everything
    (`cpu_drained_s`, over `all_events`: the lines of other connections on the host cost it too)."""
    launched, startup = tracer.start()
    try:
        ready = procfs.cpu_sample(launched.pid)
        figures, load = _measure(launched, workload, stats, connections, rate=rate)
        time.sleep(DRAIN_S)  # it polls its perf buffer every 100 ms
        figures["cpu_drained_s"] = procfs.cpu_between(ready, procfs.cpu_sample(launched.pid))
        figures["peak_rss_bytes"] = launched.usage().peak_rss_bytes
    finally:
        launched.stop(signal.SIGINT)  # it flushes its stdout as it exits
    _startup(figures, startup)
    lines = tracer.lines(load.port)
    expected = tracer.tool.lines_per_connection * load.connections
    figures.update(events=lines.ours, all_events=lines.events, expected_events=expected,
                   lost=max(0, expected - lines.ours), reported_lost=libbpf_tools.lost_events(launched.output()))
    return figures


def gespann_trace_load(tracer: GespannTrace, workload: Workload, stats: bool = False, rate: float = 0,
                       connections: int | None = None) -> dict:
    """Trace mode over one workload run, as `libbpf_tool` measures its peers: records, and CPU from
    the start of the workload until every record is out (`cpu_drained_s`)."""
    launched, startup = tracer.start()
    try:
        before = procfs.cpu_sample(launched.pid)
        figures, load = _measure(launched, workload, stats, connections, rate=rate)
        tracer.drain(expected=10 ** 9)  # until quiet: records per connection are the trace section's to know
        figures["cpu_drained_s"] = procfs.cpu_between(before, procfs.cpu_sample(launched.pid))
        figures["peak_rss_bytes"] = launched.usage().peak_rss_bytes
    finally:
        launched.stop(signal.SIGTERM)
    _startup(figures, startup)
    counted = tracer.records(launched)
    figures.update(events=counted.records, all_events=counted.records, reported_lost=counted.reported_lost)
    return figures


def libbpf_tool_reader_stopped(tracer: LibbpfTool, workload: Workload, records: int = 400,
                               fill: int = 2000) -> tuple[dict, dict]:
    """The tool's in-kernel cost with its reader stopped (SIGSTOP), twice: first while its perf buffer
    still has room for `records` (each output succeeds and raises its IRQ-work interrupt, but no task
    is woken: the reader cannot run), then after `fill` connections have filled it (every output
    fails, nothing is raised). Against a run with the reader going, the first tells what waking the
    reader costs, the second what the output and its interrupt cost. Needs run statistics on."""
    launched, _ = tracer.start()
    try:
        os.kill(launched.pid, signal.SIGSTOP)
        room, _ = _measure(launched, workload, stats=True,
                           connections=max(1, records // tracer.tool.lines_per_connection))
        workload.run(fill)
        full, _ = _measure(launched, workload, stats=True)
    finally:
        os.kill(launched.pid, signal.SIGCONT)
        launched.stop(signal.SIGINT)
    full["reported_lost"] = libbpf_tools.lost_events(launched.output())
    return room, full
