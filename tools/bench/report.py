"""From the raw measurements (bench.json) to the figures, the targets' verdicts and the markdown table.

Raw measurements are kept per round so the JSON can be re-summarised; every
figure here is a median (see summary.py), except losses, which are the worst run's: one
lossy run is a loss. A target is "met" or "MISSED" only
when both sides of it were measured; otherwise it says why it is not judged.
"""
from __future__ import annotations

from dataclasses import dataclass

from .summary import Spread, noise_wider_than, per_10k, slowdown, spread

GESPANN, BPFTRACE, NONE = "gespann", "bpftrace", "none"
GESPANN_TP = "gespann (tracepoint mode)"
STATE_TRACEPOINT = "inet_sock_set_state"
MIB = 2 ** 20


@dataclass
class Row:
    figure: str
    gespann: Spread | None
    peer: Spread | None = None
    unit: str = ""
    ratio: float | None = None  # gespann / peer, of the medians (or as the row says)
    target: str = ""
    met: bool | None = None  # None: no target, or not judged
    note: str = ""
    scale: float = 1.0  # what the unit's figure is of the raw values
    digits: int = 0
    short: str = ""  # the chart's label


def _column(rounds: list[dict], tracer: str, key: str) -> list:
    return [r[tracer].get(key) for r in rounds if tracer in r]


def _ratio(a: Spread | None, b: Spread | None) -> float | None:
    return a.median / b.median if a and b and b.median else None


def _judge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def kernel_cost(samples: list[dict], tracer: str, tracepoint: str = STATE_TRACEPOINT) -> Spread | None:
    """ns per run of `tracer`'s programs on `tracepoint`, median over the cost rounds."""
    values = []
    for sample in samples:
        cost = sample.get(tracer, {}).get("per_tracepoint", {}).get(tracepoint)
        if cost and cost["runs"]:
            values.append(cost["run_time_ns"] / cost["runs"])
    return spread(values)


def traced(samples: list[dict]) -> list[str]:
    """The tracepoints gespann's programs ran on in the cost rounds, the state changes first."""
    seen = {tp for sample in samples for tp, c in sample.get(GESPANN, {}).get("per_tracepoint", {}).items()
            if c["runs"]}
    return sorted(seen, key=lambda tp: (tp != STATE_TRACEPOINT, tp))


def kernel_cost_per_connection(samples: list[dict], tracer: str) -> Spread | None:
    values = []
    for sample in samples:
        run = sample.get(tracer)
        if run and run.get("connections"):
            values.append(sum(c["run_time_ns"] for c in run["per_tracepoint"].values()) / run["connections"])
    return spread(values)


def rows(results: dict) -> list[Row]:
    rounds = results.get("rounds", [])
    out = []
    g, b = spread(_column(rounds, GESPANN, "startup_wall_s")), spread(_column(rounds, BPFTRACE, "startup_wall_s"))
    ratio = _ratio(g, b)
    out.append(Row("Start-up: probes attached, first metrics / first output (wall)", g, b, "s", ratio,
                   "<= 0.5x", _judge(ratio, 0.5), digits=3, short="start-up"))
    g, b = spread(_column(rounds, GESPANN, "startup_cpu_s")), spread(_column(rounds, BPFTRACE, "startup_cpu_s"))
    out.append(Row("Start-up CPU (user + system)", g, b, "s", _ratio(g, b), digits=3))
    g, b = spread(_column(rounds, GESPANN, "peak_rss_bytes")), spread(_column(rounds, BPFTRACE, "peak_rss_bytes"))
    ratio = _ratio(g, b)
    out.append(Row("Peak RSS", g, b, "MiB", ratio, "<= 0.4x", _judge(ratio, 0.4), scale=1 / MIB, digits=1,
                   short="peak RSS"))

    cost = results.get("kernel_cost", [])
    for tracepoint in traced(cost):
        b = kernel_cost(cost, BPFTRACE, tracepoint)
        for tracer, label, short in ((GESPANN, "default attach", "ns/event"), (GESPANN_TP, "tracepoint mode",
                                                                               "ns/event, tp mode")):
            g = kernel_cost(cost, tracer, tracepoint)
            if g is None:
                continue
            ratio = _ratio(g, b)
            out.append(Row(f"In-kernel cost per event, {tracepoint} (gespann: {label})", g, b, "ns", ratio,
                           "<= 1x", _judge(ratio, 1.0), digits=0, short=f"{tracepoint}\n{short}"))
    g, b = kernel_cost_per_connection(cost, GESPANN), kernel_cost_per_connection(cost, BPFTRACE)
    out.append(Row("In-kernel cost per loopback connection, all programs", g, b, "ns", _ratio(g, b), digits=0,
                   short="ns/connection"))
    per_connection = {GESPANN: g, BPFTRACE: b}

    base = _column(rounds, NONE, "rate")
    out.append(Row("Workload, no tracer", spread(base), None, "conn/s", digits=0))
    g_rate, b_rate = _column(rounds, GESPANN, "rate"), _column(rounds, BPFTRACE, "rate")
    out.append(Row("Workload with the tracer", spread(g_rate), spread(b_rate), "conn/s",
                   _ratio(spread(g_rate), spread(b_rate)), digits=0))
    g, b = slowdown(g_rate, base), slowdown(b_rate, base)
    noisy = noise_wider_than(g, 0.02)
    out.append(Row("Workload slowdown (round by round vs no tracer)", g, b, "%", None, "<= 2 %",
                   None if noisy else _judge(g.median if g else None, 0.02), scale=100, digits=1,
                   note=f"the rounds spread over {(g.high - g.low) * 100:.0f} points, wider than the target, so the "
                        "machine's noise decides it; the stable figures are the in-kernel cost per connection above "
                        "and its share below" if noisy else ""))
    base = _column(rounds, NONE, "load_cpu_us_per_connection")
    bare = spread(base)
    if bare and bare.median:
        shares = {name: Spread(c.median / (bare.median * 1e3), c.low / (bare.median * 1e3),
                               c.high / (bare.median * 1e3), c.n) if c else None
                  for name, c in per_connection.items()}
        out.append(Row("In-kernel cost per connection as a share of a bare loopback connection's CPU (no tracer: "
                       "the load generator's, kernel work included): the slowdown it stands for", shares[GESPANN],
                       shares[BPFTRACE], "%", None, scale=100, digits=1))
    g_cpu, b_cpu = _column(rounds, GESPANN, "load_cpu_us_per_connection"), _column(rounds, BPFTRACE,
                                                                                    "load_cpu_us_per_connection")
    out.append(Row("Workload CPU per connection (the load generator's, kernel work included)", spread(g_cpu),
                   spread(b_cpu), "µs", _ratio(spread(g_cpu), spread(b_cpu)), digits=1,
                   note=f"no tracer: {_format(spread(base), Row('', None, digits=1))} µs"))
    g, b = slowdown(base, g_cpu), slowdown(base, b_cpu)  # 1 - base/with: the share of the CPU the tracer added
    out.append(Row("Workload CPU added by the tracer (share of the CPU per connection)", g, b, "%", None,
                   scale=100, digits=1))

    g = spread([per_10k(r[GESPANN]["cpu_s"], r[GESPANN]["connections"]) for r in rounds if GESPANN in r])
    b = spread([per_10k(r[BPFTRACE]["cpu_s"], r[BPFTRACE]["connections"]) for r in rounds if BPFTRACE in r])
    out.append(Row("Userspace CPU per 10,000 connections, metrics mode", g, b, "ms", _ratio(g, b), digits=1))

    checked = [r[GESPANN] for r in rounds if GESPANN in r and "missing" in r[GESPANN]]
    missing = spread([c["missing"] for c in checked])
    generated = sum(c["connections"] for c in checked)
    all_match = bool(checked) and all(c["counts_match"] for c in checked)
    out.append(Row("Metrics mode: connection ends not counted", missing, None, "", None, "0",
                   all_match if checked else None, digits=0,
                   note=f"{2 * generated} connection ends (client + server) in {len(checked)} runs; "
                        f"{'every count equal to the generated connections' if all_match else 'counts DIFFER'}"))

    trace = results.get("trace", {})
    if trace.get("available"):
        measured = trace["runs"]
        out.append(Row("Userspace CPU per 10,000 connections, trace mode (records printed as JSON)",
                       spread([per_10k(m["cpu_s"], m["connections"]) for m in measured]), None, "ms", digits=1))
        reported = [m["reported_lost"] for m in measured]
        worst = max(m["lost"] for m in measured)
        out.append(Row(f"Trace mode: records lost at the highest rate, worst of {len(measured)} runs",
                       spread([worst]), None, "", None, "0 in every run", worst == 0, digits=0,
                       note=f"at {spread([m['rate'] for m in measured]).median:.0f} conn/s, "
                            f"{measured[0]['per_connection']:g} records per connection expected, "
                            f"of {measured[0]['expected_records']} per run; lost per run: "
                            f"{', '.join(str(m['lost']) for m in measured)}; gespann itself reported lost: "
                            f"{', '.join('none' if r is None else str(r) for r in reported)}"))
    return out


def probe_sets(results: dict) -> dict:
    """The probe set gespann attached (from its start-up line), and every set seen if it changed
    during the run (an editable install picks up a probe added meanwhile)."""
    seen = [run[GESPANN]["probes"] for run in (*results["rounds"], *results["kernel_cost"])]
    distinct = list(dict.fromkeys(seen))
    return {"probes": seen[-1], **({"probes_changed": distinct} if len(distinct) > 1 else {})}


def _format(value: Spread | None, row: Row) -> str:
    if value is None:
        return "—"
    median = f"{value.median * row.scale:.{row.digits}f}"
    if value.n > 1 and value.low != value.high:
        return f"{median} ({value.low * row.scale:.{row.digits}f}–{value.high * row.scale:.{row.digits}f})"
    return median


def _verdict(row: Row) -> str:
    if not row.target:
        return ""
    if row.met is None:
        return f"{row.target}: not judged"
    return f"{row.target}: {'met' if row.met else 'MISSED'}"


def markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [
        (f"Measured {meta.get('date', '?')} on kernel {meta.get('kernel', '?')}, {meta.get('cpus', '?')} CPUs, "
        f"commit {meta.get('commit', '?')}; load average {meta.get('load_before', '?')} before, "
        f"{meta.get('load_after', '?')} after (other people's work shares this machine)."),
        (f"gespann probes measured: {meta.get('probes', '?')}. Peer: {meta.get('bpftrace', '?')} running "
        "tools/bench/connections.bt on the same tracepoints."),
        (f"Medians of {meta.get('rounds', '?')} rounds (min–max in brackets); workload: {meta.get('connections', '?')} "
        f"loopback connections per run, {meta.get('threads', '?')} client threads, "
        f"in-kernel cost over {meta.get('cost_rounds', '?')} rounds with BPF run statistics on."),
        *([(f"WARNING: the probe set changed during the run (the figures mix them): "
           f"{' / '.join(meta['probes_changed'])}")] if meta.get("probes_changed") else []),
        "",
        "| figure | gespann | bpftrace | gespann / bpftrace | target |",
        "|---|---|---|---|---|",
    ]
    for row in rows(results):
        unit = f" ({row.unit})" if row.unit else ""
        ratio = f"{row.ratio:.3g}x" if row.ratio is not None else ""  # 3 digits: 0.502x is not 0.5x
        figure = f"{row.figure}{unit}" + (f" — {row.note}" if row.note else "")
        lines.append(f"| {figure} | {_format(row.gespann, row)} | {_format(row.peer, row)} | {ratio} | "
                     f"{_verdict(row)} |")
    lines.append("")
    trace = results.get("trace", {})
    if not trace.get("available"):
        lines.append(f"- {trace.get('note', 'trace mode: not measured')}")
    for tool, outcome in results.get("bcc_host", {}).items():
        lines.append(f"- {tool} on this machine: {outcome}")
    if results.get("peers"):
        from .peer_report import markdown as peers_markdown

        lines += peers_markdown(results["peers"], trace, results.get("kernel_cost"))
    if results.get("breakdown"):
        from .breakdown import markdown as breakdown_markdown

        lines += breakdown_markdown(results["breakdown"])
    if results.get("drops"):
        from .drops import markdown as drops_markdown

        lines += drops_markdown(results["drops"])
    vm = results.get("vm")
    if vm:
        lines += ["", *vm_markdown(vm)]
    if results.get("scale"):
        from .scale import markdown as scale_markdown

        lines += scale_markdown(results["scale"])
    if results.get("soak"):
        from .soak import markdown as soak_markdown

        lines += soak_markdown(results["soak"])
    return "\n".join(lines) + "\n"


def vm_markdown(vm: dict) -> list[str]:
    """The bcc comparison in the 6.1 guest: its own small table, or why it did not run."""
    head = f"### In a VM: Debian {vm.get('release', '6.1')}, software emulation (qemu TCG), kernel headers installed"
    if vm.get("note"):
        return [head, "", f"- {vm['note']}"]
    lines = [head, "", f"{vm.get('summary', '')} Headers: {vm.get('headers', '?')}.", "",
             ("| tracer | start-up wall (s) | start-up CPU (s) | peak RSS (MiB) | in-kernel ns per event "
             f"({STATE_TRACEPOINT}) | in-kernel ns per connection (all programs) | userspace CPU per 10,000 "
             "connections (ms) | lines out / expected, lost |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, run in vm.get("tracers", {}).items():
        if "error" in run:
            lines.append(f"| {name} | {run['error']} | | | | | | |")
            continue
        cost = run.get("per_tracepoint", {}).get(STATE_TRACEPOINT)
        ns = f"{cost['run_time_ns'] / cost['runs']:.0f}" if cost and cost["runs"] else "—"
        out = (f"{run['events']} / {run['expected_events']}, said lost: {run.get('reported_lost', '?')}"
               if "events" in run else "")
        all_ns = sum(c["run_time_ns"] for c in run.get("per_tracepoint", {}).values()) / run["connections"]
        lines.append(f"| {name} | {run['startup_wall_s']:.2f} | {run['startup_cpu_s']:.2f} | "
                     f"{run['peak_rss_bytes'] / MIB:.1f} | {ns} | {all_ns:.0f} | "
                     f"{per_10k(run['cpu_s'], run['connections']):.0f} | {out} |")
    return lines


def verdicts(results: dict) -> dict[str, bool | None]:
    """Target -> met (None: not judged), for the summary line and the exit status."""
    judged = {f"{row.figure}: {row.target}": row.met for row in rows(results) if row.target}
    if results.get("scale"):
        from .scale import verdicts as scale_verdicts

        judged.update({f"scale: {target}": met for target, met in scale_verdicts(results["scale"]).items()})
    if results.get("peers"):
        from .peer_report import verdicts as peers_verdicts

        judged.update({f"libbpf-tools: {target}": met for target, met in
                       peers_verdicts(results["peers"], results.get("trace", {}), results.get("kernel_cost")).items()})
    if results.get("breakdown"):
        from .breakdown import verdicts as breakdown_verdicts

        judged.update({f"breakdown: {target}": met for target, met in breakdown_verdicts(results["breakdown"]).items()})
    if results.get("drops"):
        from .drops import verdicts as drops_verdicts

        judged.update({f"drops: {target}": met for target, met in drops_verdicts(results["drops"]).items()})
    if results.get("soak"):
        from .soak import verdicts as soak_verdicts

        judged.update({f"soak: {target}": met for target, met in soak_verdicts(results["soak"]).items()})
    return judged
