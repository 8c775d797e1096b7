"""The libbpf-tools comparison: gespann beside tcplife and tcpstates, CO-RE C loaded by libbpf.

Measured in the bench's namespace, after the bpftrace rounds of the same run (or alone with
--peers-only, merged into bench.json), in five parts:

- cold starts of `gespann run`, with an empty kernel-types cache: peak RSS, and what the child
  that resolved the kernel's types took;
- rounds at the highest rate (the bench's TCP workload): no tracer, `gespann run`, tcplife and
  tcpstates take turns; start-up, peak RSS, slowdown round by round against the no-tracer run of the
  same round, and each tool's lines against the connections made (its losses);
- rounds of a TCP+UDP workload (a UDP datagram echoed beside each connection): no tracer and
  `gespann run`, for the slowdown of gespann's default probe set when the UDP probes have work;
- cost rounds with BPF run statistics on: `gespann run` (under both workloads), `gespann trace`,
  tcplife and tcpstates, in-kernel ns per event per tracepoint; then tcplife and tcpstates again
  with their reader stopped, while their perf buffer has room (outputs succeed and raise their
  interrupt, no task is woken) and once it is full (no output succeeds, nothing is raised), to tell
  what the output, its interrupt and the reader's wakeup cost their program; and, once, what their
  programs are (type, helper calls, map types);
- rounds at one fixed rate every tracer keeps up with (`--rate`): `gespann trace`, tcplife and
  tcpstates, user-space CPU per record.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from . import runs
from .gespann_tracer import GespannMetrics
from .libbpf_tools import PACKAGE, TOOLS, LibbpfTool, locate, program_profile
from .trace_mode import GespannTrace
from .trace_mode import available as trace_available

NONE, GESPANN, GESPANN_TRACE = "none", "gespann", "gespann trace"
#: The cost rounds' key of `gespann run` under the TCP+UDP workload.
GESPANN_UDP = "gespann, TCP+UDP"
TCPLIFE, TCPSTATES = (tool.name for tool in TOOLS)
#: Seconds of the workload at the fixed rate: connections = rate * this.
FIXED_RATE_S = 5
#: The cost rounds' key of a tool run with its reader stopped: "tcplife, reader stopped".
READER_STOPPED = ", reader stopped"
#: ... and while its perf buffer still had room: "tcplife, reader stopped, room left".
READER_STOPPED_ROOM = ", reader stopped, room left"
#: Starts of `gespann run` with an empty kernel-types cache, for the peak RSS of a cold start.
COLD_STARTS = 3
#: UDP datagrams echoed per connection in the TCP+UDP rounds.
UDP_PER_CONNECTION = 1


def virtual_machine(cpuinfo: str | None = None) -> bool:
    """True in a guest (the `hypervisor` CPU flag): there an interrupt a program raises may cost a VM exit."""
    if cpuinfo is None:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    return any(line.startswith("flags") and "hypervisor" in line.split() for line in cpuinfo.splitlines())


def missing_tools() -> list[str]:
    return [tool.program for tool in TOOLS if locate(tool.program) is None]


def run(gespann_executable: Path, workdir: Path, gespann: GespannMetrics, workload: runs.Workload, rounds: int,
        cost_rounds: int, rate: float, say: Callable[[str], None]) -> dict:
    """Every part, in the namespace `workload` runs in; `gespann` is the bench's `gespann run`."""
    missing = missing_tools()
    if missing:
        say(f"libbpf-tools peers: {' '.join(missing)} not installed (Debian {PACKAGE})")
        return {"note": f"not measured: {' '.join(missing)} not installed (Debian {PACKAGE})"}
    tools = {tool.name: LibbpfTool(tool, workdir) for tool in TOOLS}
    result: dict = {"rate": rate, "rounds": [], "udp_rounds": [], "kernel_cost": [], "fixed_rate": [],
                    "cold_starts": [], "udp_per_connection": UDP_PER_CONNECTION, "programs": {},
                    "virtual_machine": virtual_machine()}
    for name, tool in tools.items():
        launched, _ = tool.start()
        try:
            result["programs"][name] = program_profile(launched.pid)
        finally:
            launched.stop()

    for index in range(COLD_STARTS):
        result["cold_starts"].append({GESPANN: runs.gespann_cold_start(gespann, workdir / "cold-cache")})
        say(f"cold start {index + 1}/{COLD_STARTS}: peak RSS "
            f"{result['cold_starts'][-1][GESPANN]['peak_rss_bytes'] / 2**20:.1f} MiB")

    tracers = {NONE: lambda: runs.baseline(workload), GESPANN: lambda: runs.gespann_metrics(gespann, workload),
               **{name: (lambda t=t: runs.libbpf_tool(t, workload)) for name, t in tools.items()}}
    _rounds(tracers, rounds, result["rounds"], "peer round", say)

    with_udp = dataclasses.replace(workload, udp=UDP_PER_CONNECTION)
    tracers = {NONE: lambda: runs.baseline(with_udp), GESPANN: lambda: runs.gespann_metrics(gespann, with_udp)}
    _rounds(tracers, rounds, result["udp_rounds"], "TCP+UDP round", say)

    from gespann.bpf.programs import enable_run_stats

    trace = None
    with enable_run_stats():
        for index in range(cost_rounds):
            sample = {GESPANN: runs.gespann_metrics(gespann, workload, stats=True),
                      GESPANN_UDP: runs.gespann_metrics(gespann, with_udp, stats=True)}
            if trace is None and trace_available(gespann_executable):
                programs = len(sample[GESPANN]["per_tracepoint"])  # ready once as many are attached
                trace = GespannTrace(gespann_executable, workdir, gespann.config, programs)
            if trace is not None:
                sample[GESPANN_TRACE] = runs.gespann_trace_load(trace, workload, stats=True)
            sample.update({name: runs.libbpf_tool(t, workload, stats=True) for name, t in tools.items()})
            for name, t in tools.items():
                sample[name + READER_STOPPED_ROOM], sample[name + READER_STOPPED] = \
                    runs.libbpf_tool_reader_stopped(t, workload)
            result["kernel_cost"].append(sample)
            say(f"peer cost round {index + 1}/{cost_rounds} done")

    connections = max(1, round(rate * FIXED_RATE_S))
    fixed = {name: (lambda t=t: runs.libbpf_tool(t, workload, rate=rate, connections=connections))
             for name, t in tools.items()}
    if trace is not None:
        fixed[GESPANN_TRACE] = lambda: runs.gespann_trace_load(trace, workload, rate=rate, connections=connections)
    _rounds(fixed, cost_rounds, result["fixed_rate"], f"fixed-rate round ({rate:g} conn/s)", say)
    _count_trace_losses(result)
    if trace is None:
        result["trace_note"] = "gespann trace: not available in this build"
    return result


def _count_trace_losses(result: dict) -> None:
    """gespann trace's losses in the cost rounds (the highest rate): records short of as many per connection
    as at the fixed rate, where it keeps up (the most any fixed-rate run gave)."""
    unhurried = [r[GESPANN_TRACE]["events"] / r[GESPANN_TRACE]["connections"] for r in result["fixed_rate"]
                 if GESPANN_TRACE in r and r[GESPANN_TRACE]["connections"]]
    if not unhurried:
        return
    per_connection = max(unhurried)
    for sample in result["kernel_cost"]:
        run = sample.get(GESPANN_TRACE)
        if run:
            run["expected_events"] = round(per_connection * run["connections"])
            run["lost"] = max(0, run["expected_events"] - run["events"])


def _rounds(tracers: dict[str, Callable[[], dict]], count: int, into: list, what: str,
            say: Callable[[str], None]) -> None:
    order = list(tracers)
    for index in range(count):
        measured = {name: tracers[name]() for name in runs.rotated(order, index)}
        into.append(measured)
        say(f"{what} {index + 1}/{count}: " + ", ".join(
            f"{name} {r['rate']:.0f}/s" + (f" ({r['events']}/{r['expected_events']} lines)" if "expected_events" in r
                                            else "") for name, r in measured.items()))
