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


def _panels(table: list[Row]) -> list[tuple[str, list[tuple[str, float, str]]]]:
    """(title, [(bar label, value, colour)]) for each row with a figure on both sides, or a baseline."""
    panels = []
    for row in table:
        bars = []
        if row.figure.startswith("Workload, no tracer") and row.gespann:
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
    panels = _panels(table)
    judged = [r for r in table if r.target and r.ratio is not None]
    count = len(panels) + (1 if judged else 0)
    columns = 3
    lines = max(1, -(-count // columns))
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.8 * lines), squeeze=False)
    flat = list(axes.flat)
    for ax, (title, bars) in zip(flat, panels):
        labels, values, colours = zip(*bars)
        drawn = ax.bar(labels, values, color=colours)
        ax.bar_label(drawn, fmt="%.3g", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.margins(y=0.15)
    if judged:
        ax = flat[len(panels)]
        names = [r.short or _wrap(r.figure, 18) for r in judged]
        ratios = [r.ratio for r in judged]
        limits = [float(r.target.split()[1].rstrip("x")) for r in judged]
        drawn = ax.bar(names, ratios, color=[GESPANN_COLOUR if r.met else "#c0392b" for r in judged])
        ax.bar_label(drawn, fmt="%.2fx", fontsize=8)
        ax.scatter(names, limits, marker="_", s=900, color="black", zorder=3, label="target (at most)")
        ax.set_title("gespann / bpftrace, against the targets", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(fontsize=7)
        ax.margins(y=0.15)
    for ax in flat[count:]:
        ax.axis("off")
    meta = results.get("meta", {})
    figure.suptitle(f"gespann vs bpftrace — kernel {meta.get('kernel', '?')}, {meta.get('date', '?')}, "
                    f"medians of {meta.get('rounds', '?')} rounds", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
