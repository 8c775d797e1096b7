"""The PNG of the report's figures: one panel per comparison, and the ratios against their targets.

Drawn with matplotlib, a bench-only dependency (the `bench` extra in
pyproject.toml, installed by `make bench`): gespann never imports it. A chart
people read needs text and axes; drawing those by hand into a PNG would be
more code to maintain than the benchmark itself.
"""
from __future__ import annotations

from pathlib import Path

from .report import Row, rows

GESPANN_COLOUR, PEER_COLOUR, BASE_COLOUR = "#2a7ab0", "#d9822b", "#8c8c8c"
BCC_COLOURS = {"bcc tcplife": "#7a5195", "bcc tcpstates": "#bc5090"}
MIB = 2 ** 20
KERNEL_ROWS = "In-kernel cost per event"


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _vm_panels(vm: dict) -> list[tuple[str, list[tuple[str, float, str]]]]:
    """The 6.1 guest's tracers side by side, bcc included: start-up, peak RSS, in-kernel ns per event."""
    measured = {name: run for name, run in vm.get("tracers", {}).items() if "error" not in run}
    if not measured:
        return []
    colour = {"gespann": GESPANN_COLOUR, "bpftrace": PEER_COLOUR, **BCC_COLOURS}

    def bars(value) -> list[tuple[str, float, str]]:
        return [(name.replace("bcc ", ""), value(run), colour.get(name, BASE_COLOUR)) for name, run in measured.items()
                if value(run) is not None]

    def per_event(run: dict) -> float | None:
        cost = run.get("per_tracepoint", {}).get("inet_sock_set_state")
        return cost["run_time_ns"] / cost["runs"] if cost and cost["runs"] else None

    where = f"VM {vm.get('release', '')}, emulated:"
    return [(f"{where}\nstart-up wall (s)", bars(lambda r: r["startup_wall_s"])),
            (f"{where}\npeak RSS (MiB)", bars(lambda r: r["peak_rss_bytes"] / MIB)),
            (f"{where}\nin-kernel ns per inet_sock_set_state event", bars(per_event))]


def _peer_panels(results: dict) -> list[tuple[str, list[tuple[str, float, str]]]]:
    """The libbpf-tools section's tracers side by side: start-up, RSS, in-kernel ns per state change
    (tcplife and tcpstates also with their reader stopped), user-space CPU per record at the fixed rate,
    workload slowdown."""
    from . import peer_report
    from .peers import GESPANN, READER_STOPPED, READER_STOPPED_ROOM, TCPLIFE, TCPSTATES
    from .summary import spread

    peers = results.get("peers") or {}
    if not peers.get("rounds"):
        return []
    colour = dict(zip(peer_report.COLUMNS, (GESPANN_COLOUR, "#7fb3d5", *BCC_COLOURS.values())))

    def bars(samples: list[dict], value, names=peer_report.COLUMNS) -> list[tuple[str, float, str]]:
        out = []
        for name in names:
            measured = spread(peer_report.values(samples, name, value))
            if measured is not None:
                out.append((name.replace(", ", ",\n"), measured.median,
                            colour.get(name, BASE_COLOUR)))
        return out

    state, runs = peer_report.STATE, peer_report.all_runs(peers)
    stopped = tuple(name + suffix for suffix in (READER_STOPPED_ROOM, READER_STOPPED) for name in (TCPLIFE, TCPSTATES))
    slow = [(name, peer_report.slowdowns(peers["rounds"], name)) for name in (GESPANN, TCPLIFE, TCPSTATES)]
    where = "libbpf-tools section:"
    return [(f"{where}\nstart-up wall (s)", bars(runs, lambda r: r.get("startup_wall_s"))),
            (f"{where}\npeak RSS (MiB)", bars(runs, lambda r: r["peak_rss_bytes"] / MIB if "peak_rss_bytes" in r
                                               else None)),
            (f"{where}\nin-kernel ns per {state} event",
             bars(peers.get("kernel_cost", []), lambda r: peer_report.ns_per_event(r, state),
                  (*peer_report.COLUMNS, *stopped))),
            (f"{where} user-space CPU per record\nat {peers.get('rate', 0):g} conn/s (µs)",
             bars(peers.get("fixed_rate", []), peer_report.cpu_per_record_us)),
            (f"{where}\nworkload slowdown, TCP (%)", [(name, value.median * 100, colour[name]) for name, value in slow
                                                       if value is not None])]


def _panels(table: list[Row]) -> list[tuple[str, list[tuple[str, float, str]]]]:
    """(title, [(bar label, value, colour)]) for each row with a figure on both sides, or a baseline.
    In-kernel cost per event has a panel of its own (`_kernel_panel`)."""
    panels = []
    for row in table:
        bars = []
        if row.figure.startswith(("Workload, no tracer", KERNEL_ROWS)):
            continue
        if row.figure.startswith("Workload with the tracer"):
            base = next((r.gespann for r in table if r.figure.startswith("Workload, no tracer")), None)
            if base:
                bars.append(("no tracer", base.median, BASE_COLOUR))
        if row.gespann is not None:
            bars.append(("gespann", row.gespann.median * row.scale, GESPANN_COLOUR))
        if row.peer is not None:
            bars.append(("bpftrace", row.peer.median * row.scale, PEER_COLOUR))
        if len(bars) >= 2:
            unit = f" ({row.unit})" if row.unit else ""
            panels.append((_wrap(row.figure + unit), bars))
    return panels


def _kernel_panel(ax, table: list[Row]) -> None:
    """ns per event on each tracepoint: gespann (default attach, tracepoint mode) and bpftrace, grouped."""
    rows = [r for r in table if r.figure.startswith(KERNEL_ROWS)]
    tracepoints = list(dict.fromkeys(r.figure.split(", ")[1].split(" (")[0] for r in rows))
    series = {"gespann": ("default attach", GESPANN_COLOUR), "gespann, tracepoint mode": ("tracepoint mode", "#7fb3d5"),
              "bpftrace": (None, PEER_COLOUR)}
    width = 0.8 / len(series)
    for index, (label, (mode, colour)) in enumerate(series.items()):
        values = []
        for tracepoint in tracepoints:
            match = [r for r in rows if f", {tracepoint} (" in r.figure and (mode is None or mode in r.figure)]
            spread = (match[0].peer if mode is None else match[0].gespann) if match else None
            values.append(spread.median if spread else 0)
        drawn = ax.bar([i + (index - 1) * width for i in range(len(tracepoints))], values, width, label=label,
                       color=colour)
        ax.bar_label(drawn, labels=[_number(v) if v else "" for v in values], fontsize=7)
    ax.set_xticks(range(len(tracepoints)), tracepoints, fontsize=8)
    ax.set_title("In-kernel cost per event (ns), by tracepoint", fontsize=9)
    ax.legend(fontsize=7)
    ax.margins(y=0.15)


def _wrap(text: str, width: int = 34) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def write(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(results)
    panels = _panels(table) + _peer_panels(results) + _vm_panels(results.get("vm") or {})
    kernel = any(r.figure.startswith(KERNEL_ROWS) for r in table)
    judged = [r for r in table if r.target and r.ratio is not None]
    columns = 3
    cells = len(panels) + (2 if kernel else 0)  # the kernel panel is two cells wide
    lines = -(-cells // columns) + (1 if judged else 0)
    figure = plt.figure(figsize=(5 * columns, 3.8 * lines))
    grid = figure.add_gridspec(lines, columns)
    cell = 0

    def next_axes(span: int = 1):
        nonlocal cell
        if cell % columns + span > columns:
            cell += columns - cell % columns
        ax = figure.add_subplot(grid[cell // columns, cell % columns:cell % columns + span])
        cell += span
        return ax

    for title, bars in panels[:3]:
        _bars(next_axes(), title, bars)
    if kernel:
        _kernel_panel(next_axes(2), table)
    for title, bars in panels[3:]:
        _bars(next_axes(), title, bars)
    if judged:
        ax = figure.add_subplot(grid[lines - 1, :])
        names = [r.short or r.figure for r in judged]
        ratios = [r.ratio for r in judged]
        limits = [float(r.target.split()[1].rstrip("x")) for r in judged]
        drawn = ax.bar(names, ratios, color=[GESPANN_COLOUR if r.met else "#c0392b" for r in judged])
        ax.bar_label(drawn, labels=[f"{r:.3g}x" for r in ratios], fontsize=8)
        ax.scatter(names, limits, marker="_", s=1500, color="black", zorder=3, label="target (at most)")
        ax.set_title("gespann / bpftrace against the targets (red: missed)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
        ax.margins(y=0.15)
    meta = results.get("meta", {})
    peers = " and libbpf-tools" if (results.get("peers") or {}).get("rounds") else ""
    figure.suptitle(f"gespann vs bpftrace{peers} — kernel {meta.get('kernel', '?')}, {meta.get('date', '?')}, "
                    f"medians of {meta.get('rounds', '?')} rounds", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _bars(ax, title: str, bars: list[tuple[str, float, str]]) -> None:
    labels, values, colours = zip(*bars)
    drawn = ax.bar(labels, values, color=colours)
    ax.bar_label(drawn, labels=[_number(v) for v in values], fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(title, fontsize=9)
    ax.margins(y=0.15)
