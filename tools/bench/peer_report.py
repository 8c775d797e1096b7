"""The libbpf-tools section of the report: its table, its targets' verdicts, and why tcplife costs what it costs.

Figures are medians over the section's rounds (min–max beside), but losses are the worst run's:
one lossy run is a loss. Ratios behind a target are taken round by round (each tracer against the
other in the same round) before their median, as the main table's slowdowns are.
"""
from __future__ import annotations

from .peers import GESPANN, GESPANN_TRACE, GESPANN_UDP, NONE, READER_STOPPED, READER_STOPPED_ROOM, TCPLIFE, TCPSTATES
from .summary import Spread, noise_wider_than, paired_ratios, slowdown, spread

STATE = "inet_sock_set_state"
COLUMNS = (GESPANN, GESPANN_TRACE, TCPLIFE, TCPSTATES)
HEADS = ("gespann run", "gespann trace", "tcplife", "tcpstates")
MIB = 2 ** 20

#: gespann trace's user-space CPU per record, at most this many times tcplife's.
TRACE_CPU_TARGET = 1.5
#: In the kernel, records (gespann trace) at most this many times metrics only, per inet_sock_set_state event.
RECORDS_TARGET = 1.2


def values(samples: list[dict], tracer: str, value) -> list:
    out = []
    for sample in samples:
        run = sample.get(tracer)
        if run is not None and "error" not in run:
            out.append(value(run))
    return [v for v in out if v is not None]


def ns_per_event(run: dict, tracepoint: str) -> float | None:
    cost = run.get("per_tracepoint", {}).get(tracepoint)
    return cost["run_time_ns"] / cost["runs"] if cost and cost["runs"] else None


def ns_per_connection(run: dict) -> float | None:
    if not run.get("per_tracepoint") or not run.get("connections"):
        return None
    return sum(c["run_time_ns"] for c in run["per_tracepoint"].values()) / run["connections"]


def cpu_per_record_us(run: dict) -> float | None:
    """The tracer's CPU from the workload's start until everything is printed, over every record it printed."""
    return run["cpu_drained_s"] * 1e6 / run["all_events"] if run.get("all_events") else None


def irq_work_per_record(run: dict) -> float | None:
    return run["irq_work"] / run["all_events"] if run.get("all_events") and "irq_work" in run else None


def wakeups_per_record(run: dict) -> float | None:
    return run["wakeups"] / run["all_events"] if run.get("all_events") and "wakeups" in run else None


def worst_loss(peers: dict, trace: dict, tracer: str) -> tuple[int, int, int | None] | None:
    """(worst run's records lost, runs, what the tracer said it lost at most) at the highest rate: for
    gespann trace, the trace section's runs and the cost rounds' of this section."""
    measured = [s[tracer] for s in (*peers.get("rounds", []), *peers.get("kernel_cost", []))
                if tracer in s and "lost" in s[tracer]]
    if tracer == GESPANN_TRACE and trace.get("available"):
        measured += trace.get("runs", [])
    if not measured:
        return None
    said = [m.get("reported_lost") for m in measured if m.get("reported_lost") is not None]
    return max(m["lost"] for m in measured), len(measured), max(said) if said else None


def slowdowns(rounds: list[dict], tracer: str) -> Spread | None:
    return slowdown([r.get(tracer, {}).get("rate") for r in rounds], [r.get(NONE, {}).get("rate") for r in rounds])


def _fmt(value: Spread | None, digits: int = 0, scale: float = 1) -> str:
    if value is None:
        return "—"
    median = f"{value.median * scale:.{digits}f}"
    if value.n > 1 and value.low != value.high:
        return f"{median} ({value.low * scale:.{digits}f}–{value.high * scale:.{digits}f})"
    return median


def all_runs(peers: dict) -> list[dict]:
    return [*peers.get("rounds", []), *peers.get("kernel_cost", []), *peers.get("fixed_rate", [])]


def table(peers: dict, trace: dict) -> list[list[str]]:
    """Rows of (figure, then one cell per COLUMNS)."""
    rounds, cost, fixed = peers.get("rounds", []), peers.get("kernel_cost", []), peers.get("fixed_rate", [])
    rate = peers.get("rate", 0)
    everywhere = all_runs(peers)

    def row(figure: str, samples: list[dict], value, digits: int = 0, scale: float = 1,
            only: tuple[str, ...] = COLUMNS) -> list[str]:
        return [figure, *(_fmt(spread(values(samples, c, value)), digits, scale) if c in only else "—"
                          for c in COLUMNS)]

    out = [
        row("Start-up to programs attached, first metrics for gespann run (wall, s)", everywhere,
            lambda r: r.get("startup_wall_s"), 3),
        row("Start-up CPU (s)", everywhere, lambda r: r.get("startup_cpu_s"), 3),
        row("Peak RSS (MiB)", everywhere, lambda r: r.get("peak_rss_bytes"), 1, 1 / MIB),
    ]
    cold = peers.get("cold_starts", [])
    if cold:
        out += [row("Peak RSS, cold start: empty kernel-types cache (MiB)", cold, lambda r: r.get("peak_rss_bytes"),
                    1, 1 / MIB, only=(GESPANN,)),
                row("... its child resolving the kernel's BTF: peak RSS (MiB), while it runs", cold,
                    lambda r: r.get("btf_child_peak_rss_bytes"), 1, 1 / MIB, only=(GESPANN,)),
                row("... its child resolving the kernel's BTF: wall time (ms)", cold, lambda r: r.get("btf_child_ms"),
                    only=(GESPANN,)),
                row("Start-up, cold start (wall, s)", cold, lambda r: r.get("startup_wall_s"), 3, only=(GESPANN,))]
    tracepoints = sorted({tp for s in cost for name in COLUMNS for tp, c in s.get(name, {}).get("per_tracepoint",
                                                                                                   {}).items()
                          if c["runs"]}, key=lambda tp: (tp != STATE, tp))
    for tracepoint in tracepoints:
        out.append(row(f"In-kernel ns per event, {tracepoint}", cost, lambda r, tp=tracepoint: ns_per_event(r, tp)))
    for suffix, what in ((READER_STOPPED_ROOM, "reader stopped, room in its perf buffer (output and interrupt, "
                                               "no task woken)"),
                         (READER_STOPPED, "reader stopped, perf buffer full (no output, no interrupt)")):
        out.append(row(f"In-kernel ns per event, {STATE}, {what}", stopped_runs(cost, suffix),
                       lambda r: ns_per_event(r, STATE), only=(TCPLIFE, TCPSTATES)))
    out.append(row("In-kernel ns per connection, all programs (host-wide runs)", cost, ns_per_connection))
    out.append(row(f"In-kernel ns per connection, all programs, TCP+UDP ({peers.get('udp_per_connection', 1)} "
                   "datagram echoed per connection)", [{GESPANN: s[GESPANN_UDP]} for s in cost if GESPANN_UDP in s],
                   ns_per_connection, only=(GESPANN,)))
    out.append(row(f"IRQ-work interrupts per record at {rate:g} conn/s (host-wide: the programs' wakeup calls, "
                   "and any other program's on the host)", fixed, irq_work_per_record, 2))
    out.append(row(f"Reader wakeups per record at {rate:g} conn/s (the tracer's voluntary context switches)", fixed,
                   wakeups_per_record, 2))
    out.append(row(f"User-space CPU per record at {rate:g} conn/s, until all is printed (µs)", fixed,
                   cpu_per_record_us, 1))
    out.append(row("User-space CPU per record at the highest rate (the cost rounds), until all is printed (µs)",
                   cost, cpu_per_record_us, 1, only=(GESPANN_TRACE, TCPLIFE, TCPSTATES)))
    out.append(row(f"Records per connection at {rate:g} conn/s", fixed,
                   lambda r: r["events"] / r["connections"] if r.get("connections") else None, 2))
    slow = [_fmt(slowdowns(rounds, c), 1, 100) if c != GESPANN_TRACE else "—" for c in COLUMNS]
    out.append(["Workload slowdown, TCP, round by round vs no tracer (%)", *slow])
    udp = peers.get("udp_rounds", [])
    out.append([f"Workload slowdown, TCP+UDP ({peers.get('udp_per_connection', 1)} datagram echoed per "
                "connection) (%)", _fmt(slowdowns(udp, GESPANN), 1, 100), "—", "—", "—"])
    losses = []
    for c in COLUMNS:
        loss = worst_loss(peers, trace, c) if c != GESPANN else None
        losses.append("—" if loss is None else
                      f"{loss[0]} of {loss[1]} runs"
                      + (f", said lost at most {loss[2]}" if loss[2] is not None else ""))
    out.append(["Records lost at the highest rate, worst run", *losses])
    return out


def stopped_runs(cost: list[dict], suffix: str) -> list[dict]:
    """The cost rounds' runs of tcplife and tcpstates with their reader stopped, under their own names."""
    return [{name: s[name + suffix] for name in (TCPLIFE, TCPSTATES) if name + suffix in s} for s in cost]


def _median_ratio(samples: list[dict], a: str, b: str, value) -> Spread | None:
    """Round by round a/b of `value`, where both were measured."""
    return spread(paired_ratios([value(s[a]) if a in s else None for s in samples],
                                [value(s[b]) if b in s else None for s in samples]))


def targets(peers: dict, trace: dict, bpftrace_cost: list[dict] | None = None) -> list[tuple[str, bool | None, str]]:
    """(target, met or None when not judged, what was measured)."""
    cost, fixed = peers.get("kernel_cost", []), peers.get("fixed_rate", [])
    out = []

    def judged(target: str, value: Spread | None, limit: float, unit: str = "x") -> None:
        if value is None:
            out.append((target, None, "not measured"))
            return
        shown = (f"{value.median * 100:.1f} %" if unit == "%" else f"{value.median:.3g}x")
        spread_text = (f" ({value.low * 100:.1f}–{value.high * 100:.1f} %)" if unit == "%" else
                       f" ({value.low:.3g}–{value.high:.3g}x)") if value.n > 1 else ""
        out.append((target, value.median <= limit, f"{shown}{spread_text}, {value.n} round{'s' * (value.n != 1)}"))

    judged(f"gespann trace user-space CPU per record <= {TRACE_CPU_TARGET:g}x tcplife's (fixed rate, round by round)",
           _median_ratio(fixed, GESPANN_TRACE, TCPLIFE, cpu_per_record_us), TRACE_CPU_TARGET)
    judged(f"gespann trace user-space CPU per record <= {TRACE_CPU_TARGET:g}x tcplife's (highest rate, round by round)",
           _median_ratio(cost, GESPANN_TRACE, TCPLIFE, cpu_per_record_us), TRACE_CPU_TARGET)
    judged(f"gespann trace in-kernel ns per event on {STATE} <= tcplife's",
           _median_ratio(cost, GESPANN_TRACE, TCPLIFE, lambda r: ns_per_event(r, STATE)), 1)
    judged(f"gespann trace in-kernel ns per event on {STATE} <= {RECORDS_TARGET:g}x gespann run's (metrics only)",
           _median_ratio(cost, GESPANN_TRACE, GESPANN, lambda r: ns_per_event(r, STATE)), RECORDS_TARGET)
    judged("peak RSS of gespann run (default config) <= 2x tcplife's",
           _median_ratio(peers.get("rounds", []), GESPANN, TCPLIFE, lambda r: r.get("peak_rss_bytes")), 2)
    cold = spread(values(peers.get("cold_starts", []), GESPANN, lambda r: r.get("peak_rss_bytes")))
    tcplife_rss = spread(values(peers.get("rounds", []), TCPLIFE, lambda r: r.get("peak_rss_bytes")))
    if cold and tcplife_rss:
        judged("peak RSS of gespann run, cold start (empty kernel-types cache) <= 2x tcplife's",
               Spread(cold.median / tcplife_rss.median, cold.low / tcplife_rss.median,
                      cold.high / tcplife_rss.median, cold.n), 2)
    for workload, key, tracer in (("TCP", "rounds", GESPANN), ("TCP+UDP", "udp_rounds", GESPANN_UDP)):
        measured = slowdowns(peers.get(key, []), GESPANN)
        judged(f"workload slowdown of gespann's default probe set <= 2 %, {workload}", measured, 0.02, "%")
        per_connection = spread(values(cost, tracer, ns_per_connection))
        if noise_wider_than(measured, 0.02):
            # noise wider than the target: a verdict on the median would be the noise's
            target, _, what = out[-1]
            stable = (f"gespann run's in-kernel {_fmt(per_connection)} ns per connection" if per_connection
                      else "in-kernel ns per connection (not measured)")
            out[-1] = (target, None, f"{what}; the rounds spread over {(measured.high - measured.low) * 100:.0f} "
                                     f"points, wider than the target, so the machine's noise decides: the "
                                     f"stable figure is {stable}")
    peer_costs = {name: spread(values(cost, name, lambda r: ns_per_event(r, STATE))) for name in (TCPLIFE, TCPSTATES)}
    if bpftrace_cost:
        peer_costs["bpftrace"] = spread(values(bpftrace_cost, "bpftrace", lambda r: ns_per_event(r, STATE)))
    present = {name: s for name, s in peer_costs.items() if s is not None}
    ours = spread(values(cost, GESPANN, lambda r: ns_per_event(r, STATE)))
    if present and ours:
        best = min(present, key=lambda name: present[name].median)
        out.append((f"gespann's in-kernel ns per event on {STATE} at or below the best peer's",
                    ours.median <= present[best].median,
                    f"gespann run {ours.median:.0f} ns, best peer {best} {present[best].median:.0f} ns"))
    loss = worst_loss(peers, trace, GESPANN_TRACE)
    out.append(("gespann trace: 0 records lost at the highest rate, in every run",
                None if loss is None else loss[0] == 0,
                "not measured" if loss is None else f"worst run lost {loss[0]}, {loss[1]} runs"))
    return out


def why_tcplife(peers: dict) -> list[str]:
    """The paragraph on tcplife's in-kernel cost, from what this run measured of its program."""
    cost, fixed = peers.get("kernel_cost", []), peers.get("fixed_rate", [])
    profile = peers.get("programs", {}).get(TCPLIFE, {}).get(STATE)
    running = {n: spread(values(cost, n, lambda r: ns_per_event(r, STATE))) for n in (TCPLIFE, TCPSTATES,
                                                                                       GESPANN_TRACE, GESPANN)}
    stopped, room = ({n: spread(values(stopped_runs(cost, suffix), n, lambda r: ns_per_event(r, STATE)))
                      for n in (TCPLIFE, TCPSTATES)} for suffix in (READER_STOPPED, READER_STOPPED_ROOM))
    interrupts = {n: spread(values(fixed, n, irq_work_per_record)) for n in (TCPLIFE, TCPSTATES)}
    wakeups = {n: spread(values(fixed, n, wakeups_per_record)) for n in (TCPLIFE, GESPANN_TRACE)}
    if not profile or not running[TCPLIFE] or not stopped[TCPLIFE]:
        return []
    calls = profile["helper_calls"]

    def ns(name: str, of: dict = running) -> str:
        return f"{of[name].median:.0f} ns" if of.get(name) else "—"

    def per_record(of: dict, name: str) -> str:
        return f"{of[name].median:.2f}" if of.get(name) else "—"

    share = 1 - stopped[TCPLIFE].median / running[TCPLIFE].median
    guest = (", and this machine is a virtual machine, where one may cost an exit to the hypervisor (the "
             "interrupt's share and the copy's are not told apart here)") if peers.get("virtual_machine") else ""
    sentences = [
        f"tcplife's program is a `{profile['type']}` program ({profile['xlated_bytes']} bytes xlated) with maps "
        f"{', '.join(profile['maps'])}; it calls bpf_probe_read_kernel {calls.get('bpf_probe_read_kernel', 0)} "
        "times in its code (CO-RE reads of the tracepoint's fields and of the socket), updates two hash maps "
        "when a socket starts (birth, idents), and when a socket closes looks both up, deletes both and sends "
        "a record with bpf_perf_event_output.",
        "libbpf's perf buffer asks for a wakeup on every record, and the kernel raises an IRQ-work interrupt "
        f"for it, taken while the program runs, so in its run time: this run counted "
        f"{per_record(interrupts, TCPLIFE)} per tcplife record ({per_record(interrupts, TCPSTATES)} per "
        f"tcpstates record; host-wide counts), and tcplife's reader woke {per_record(wakeups, TCPLIFE)} times "
        "per record.",
        f"With the reader stopped and its perf buffer full (every output fails, nothing is raised) the same "
        f"program costs {ns(TCPLIFE, stopped)} per event against {ns(TCPLIFE)} with the reader going: the record "
        f"and its wakeup are {share * 100:.0f} % of tcplife's cost, although only 1 event in 5 sends one.",
        f"tcpstates, which sends a record for every event, costs {ns(TCPSTATES)} per event "
        f"({ns(TCPSTATES, stopped)} stopped): the reads and hash-map updates are the smaller part.",
        "Stopped while its buffer still has room, the outputs succeed and raise their interrupt but no task can "
        f"be woken: tcplife then costs {ns(TCPLIFE, room)} and tcpstates {ns(TCPSTATES, room)} per event, so "
        "the price is the output with its interrupt, not the scheduling of the reader.",
        f"On x86 an IRQ-work interrupt is a self-IPI{guest}.",
        f"gespann trace's reader woke {per_record(wakeups, GESPANN_TRACE)} times per record, and its programs "
        f"cost {ns(GESPANN_TRACE)} per event ({ns(GESPANN)} for gespann run, metrics only).",
    ]
    return ["#### Why tcplife costs what it costs in the kernel", "", " ".join(sentences)]


def markdown(peers: dict, trace: dict, bpftrace_cost: list[dict] | None = None) -> list[str]:
    head = "### Against libbpf-tools: tcplife and tcpstates (CO-RE C, loaded by libbpf)"
    if peers.get("note"):
        return ["", head, "", f"- {peers['note']}"]
    measured = peers.get("measured", {})
    lines = ["", head, "",
             (f"Measured {measured.get('date', '?')} on kernel {measured.get('kernel', '?')}, "
              f"{measured.get('cpus', '?')} CPUs, commit {measured.get('commit', '?')}, load average "
              f"{measured.get('load_before', '?')}; in the bench's namespace, {len(peers.get('rounds', []))} rounds "
              f"at the highest rate (no tracer, gespann run, tcplife, tcpstates in turn), as many with TCP+UDP, "
              f"{len(peers.get('kernel_cost', []))} rounds with BPF run statistics on, "
              f"{len(peers.get('fixed_rate', []))} at {peers.get('rate', 0):g} connections per second. tcplife "
              "and tcpstates trace the whole host: their lines of the bench's connections are counted against "
              "the connections made, and their CPU per record is over every line they printed. Losses: the "
              "worst run's."), "",
             "| figure | " + " | ".join(HEADS) + " |", "|---|" + "---|" * len(HEADS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table(peers, trace)]
    lines.append("")
    lines += [f"- {target}: {'not judged' if met is None else 'met' if met else 'MISSED'} ({what})"
              for target, met, what in targets(peers, trace, bpftrace_cost)]
    if peers.get("trace_note"):
        lines.append(f"- {peers['trace_note']}")
    why = why_tcplife(peers)
    if why:
        lines += ["", *why]
    return lines


def verdicts(peers: dict, trace: dict, bpftrace_cost: list[dict] | None = None) -> dict[str, bool | None]:
    return {target: met for target, met, _ in targets(peers, trace, bpftrace_cost)} if not peers.get("note") else {}
