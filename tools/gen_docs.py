#!/usr/bin/env python3
"""Write the generated parts of docs/ from gespann's own declarations, so the reference cannot drift from the code.

- docs/metrics.md: every family the Prometheus page serves, as the probes, gespann and the exporters declare
  them (the catalogue's MetricSpecs, the original gespann's names, the exporters' own and `process_*` figures);
- docs/config.md: every config key (gespann.config.KEYS) and every exporter kind's settings (exporters.KINDS);
- docs/flavours.md: the table of attach modes (gespann.probes.toolkit.flavours.ATTACH_MODES), in order of preference.

Each document keeps its prose; only the text between its `<!-- generated: NAME -->` and
`<!-- end generated: NAME -->` markers is written. tests/tools/test_generated_docs.py fails when a
generated part is stale.

    .venv/bin/python tools/gen_docs.py           # rewrite the generated parts
    .venv/bin/python tools/gen_docs.py --check   # exit 1, naming the stale documents, if any is stale
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
COMMAND = ".venv/bin/python tools/gen_docs.py"


# -- markdown -----------------------------------------------------------


def cell(text: object) -> str:
    """Text as one table cell: pipes escaped, line breaks joined."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(text: object) -> str:
    return f"`{text}`"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += [f"| {' | '.join(cell(value) for value in row)} |" for row in rows]
    return lines


def shown(value: Any) -> str:
    """A default as a YAML file would write it."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, float):
        return code(f"{value:g}")
    if isinstance(value, (list, tuple)):
        return code(f"[{', '.join(_flow(item) for item in value)}]")
    if isinstance(value, dict):
        return code(_flow(value))
    return code(value)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{name}: {_flow(item)}" for name, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_flow(item) for item in value)}]"
    return str(value)


# -- docs/metrics.md ----------------------------------------------------


def _kind(kind: object) -> str:
    return getattr(kind, "value", kind)


def _page_families():
    """The Prometheus page's families, as a run with every probe and every exporter kind would serve them:
    built from the catalogue with no series, and exporters built (never started) for their own figures."""
    from gespann.collector import CATALOGUE, Metric, Snapshot
    from gespann.exporters import KINDS, BuildContext, SelfMetricSource, SnapshotFamilies
    from gespann.settings import ConfigError

    class NoTraffic:
        def snapshot(self) -> Snapshot:
            return Snapshot(0.0, {spec.name: Metric(spec.name, spec.kind, spec.help, {}, spec.dogstatsd, spec.labels)
                                  for spec in CATALOGUE})

    collector = NoTraffic()
    sources: list = []
    for name in KINDS:
        kind = KINDS[name]
        try:
            settings = kind.validate({}, name)
        except ConfigError:  # a kind that cannot be built without a setting of the user's (jsonl's path)
            continue
        built = kind.build(settings, BuildContext(collector, sources))
        if isinstance(built, SelfMetricSource):
            sources.append(built)
    return list(SnapshotFamilies(collector, sources).families())


def _declared_by() -> dict[str, list[str]]:
    from gespann.collector import OWN_METRICS
    from gespann.probes import ALL_PROBES

    by: dict[str, list[str]] = {}
    for probe in ALL_PROBES:
        for spec in probe.metrics:
            by.setdefault(spec.name, []).append(probe.name)
    for spec in OWN_METRICS:
        by.setdefault(spec.name, []).append("gespann")
    return by


def _dogstatsd_prefix() -> str:
    from gespann.exporters import KINDS

    return next(setting.default for setting in KINDS["datadog"].settings if setting.name == "prefix")


def _dogstatsd_names(spec, prefix: str) -> str:
    """What DogStatsD sends for `spec`: its name, or a histogram's counts (gespann/exporters/datadog.py)."""
    from gespann.collector import Kind

    name = f"{prefix}.{spec.dogstatsd}" if prefix else spec.dogstatsd
    if spec.kind is Kind.HISTOGRAM:
        return f"{code(name + '.count')}, {code('.sum')}, {code('.bucket')}"
    return code(name)


def metrics() -> list[str]:
    from gespann.collector import CATALOGUE
    from gespann.exporters.legacy_names import LEGACY_METRICS
    from gespann.exporters.prometheus import PREFIX

    families = _page_families()
    by_name = {family.name: family for family in families}
    declared_by = _declared_by()
    prefix = _dogstatsd_prefix()
    catalogued = {PREFIX + spec.name for spec in CATALOGUE}
    legacy = {metric.name for metric in LEGACY_METRICS}
    for spec in CATALOGUE:
        assert PREFIX + spec.name in by_name, f"the page does not serve {PREFIX + spec.name}"

    lines = ["### gespann's metrics", "",
             f"Every metric the probes and gespann declare (`gespann/collector/catalogue.py`), as Prometheus names "
             f"it; DogStatsD sends each under its own name after the `prefix` setting (`{prefix}` by default), "
             "counters as increments since the last flush and a histogram as counts (`gespann/exporters/datadog.py`). "
             "Counters count since gespann started; histograms are in their unit, with their exact sum.", ""]
    lines += table(
        ("metric", "type", "unit", "labels", "meaning", "DogStatsD", "declared by"),
        ((code(PREFIX + spec.name), spec.kind.value, spec.unit or "—", ", ".join(code(label) for label in spec.labels)
          or "—", spec.help, _dogstatsd_names(spec, prefix),
          ", ".join(declared_by.get(spec.name, ())))
         for spec in CATALOGUE))
    lines += ["", "### The original gespann's names", "",
              "Served by Prometheus beside the names above, derived from them with correct semantics "
              "(`gespann/exporters/legacy_names.py`); DogStatsD does not send them.", ""]
    lines += table(("metric", "type", "labels", "meaning"),
                   ((code(metric.name), _kind(metric.kind), ", ".join(code(label) for label in metric.label_names)
                     or "—", metric.help) for metric in LEGACY_METRICS))
    others = [family for family in families if family.name not in catalogued and family.name not in legacy]
    lines += ["", "### The exporters' own figures", "",
              "Served by Prometheus: what another exporter could not do (only while that exporter runs), and "
              "gespann's own CPU, memory and file descriptors under their conventional names, read from `/proc` "
              "at each scrape.", ""]
    lines += table(("metric", "type", "labels", "meaning"),
                   ((code(family.name), _kind(family.kind), _family_labels(family) or "—", family.help)
                    for family in others))
    return lines


def _family_labels(family) -> str:
    names = list(family.label_names) + sorted({name for key in family.series for name, _ in key})
    return ", ".join(code(name) for name in dict.fromkeys(names))


# -- docs/config.md -----------------------------------------------------


def _map_capacity(name: str) -> Optional[int]:
    """The default capacity of the probes' map `name`: its factory's `capacity` default."""
    from gespann.probes import ALL_PROBES

    for probe in ALL_PROBES:
        factory: Optional[Callable] = {**probe.maps, **probe.shared_maps}.get(name)
        if factory is not None:
            parameter = inspect.signature(factory).parameters.get("capacity")
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return parameter.default
    return None


def config() -> list[str]:
    from gespann.config import EXPORTERS_KEY, KEYS
    from gespann.exporters import KINDS
    from gespann.exporters.kinds import REQUIRED

    lines = ["### gespann's keys", "",
             "All optional. A key given empty (`key:` alone, YAML's null) takes its default.", ""]
    rows = []
    for path in KEYS:
        key = KEYS[path]
        values = ", ".join(code(choice) for choice in key.choices)
        values = f"{values} {key.values}".strip() if values else key.values
        default = key.default
        if key.section == "limits":
            default = _map_capacity(key.name)
        rows.append((code(path), values, shown(default) if default not in ((), {}) else _empty(default), key.doc))
    lines += table(("key", "values", "default", "meaning"), rows)
    lines += ["", f"### Exporters: `{EXPORTERS_KEY}[].type` and its `settings`", "",
              f"`{EXPORTERS_KEY}[].type` is one of {', '.join(code(name) for name in KINDS)}; "
              "each type declares its settings (`gespann/exporters/kinds.py`).", ""]
    for name in KINDS:
        kind = KINDS[name]
        lines += [f"#### `{name}`", "", f"{kind.help[0].upper()}{kind.help[1:]}.", ""]
        lines += table(("setting", "default", "meaning"),
                       ((code(f"{EXPORTERS_KEY}[].settings.{setting.name}"),
                         "required" if setting.default is REQUIRED else shown(setting.default), setting.help)
                        for setting in kind.settings))
        lines.append("")
    return lines[:-1]


def _empty(value: Any) -> str:
    return "`[]`" if isinstance(value, (list, tuple)) else "`{}`"


# -- docs/flavours.md ---------------------------------------------------


def flavours() -> list[str]:
    from gespann.probes.toolkit.flavours import ATTACH_MODES

    return table(("flavour", "what it is", "needs", "since", "socket arguments"),
                 ((code(mode.name), mode.description, mode.needs, mode.since,
                   "BTF pointers (direct loads)" if mode.btf_pointers else "plain addresses (bpf_probe_read_kernel)")
                  for mode in ATTACH_MODES))


# -- documents ----------------------------------------------------------

#: Each generated part: (document, part name, what writes it).
PARTS: tuple[tuple[str, str, Callable[[], list[str]]], ...] = (
    ("metrics.md", "metrics", metrics),
    ("config.md", "config", config),
    ("flavours.md", "attach-modes", flavours),
)


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- generated: {name} by tools/gen_docs.py from the code's declarations; do not edit here -->",
            f"<!-- end generated: {name} -->")


def regenerated(text: str, name: str, lines: list[str], document: str) -> str:
    """`text` with its part `name` replaced by `lines`."""
    begin, end = _markers(name)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/{document} has no part {name}: it needs the lines\n{begin}\n{end}")
    return pattern.sub(lambda _: "\n".join([begin, *lines, end]), text, count=1)


def documents() -> dict[Path, tuple[str, str]]:
    """Each generated document: (its text now, its text regenerated)."""
    out: dict[Path, tuple[str, str]] = {}
    for document, name, write in PARTS:
        path = DOCS / document
        now, _ = out.get(path, (path.read_text(), None))
        fresh = regenerated(out[path][1] if path in out else now, name, write(), document)
        out[path] = (now, fresh)
    return out


def stale() -> list[Path]:
    return [path for path, (now, fresh) in documents().items() if now != fresh]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is stale")
    args = parser.parse_args(argv)
    changed = [(path, fresh) for path, (now, fresh) in documents().items() if now != fresh]
    for path, fresh in changed:
        if args.check:
            print(f"{path.relative_to(REPO)} is stale: run {COMMAND}", file=sys.stderr)
        else:
            path.write_text(fresh)
            print(f"wrote {path.relative_to(REPO)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
