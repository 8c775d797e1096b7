"""What a probe declares, held against what its reader returns at each collection.

A probe declares its metrics (MetricSpec: name and label names) and its reader
returns series for them. The two are written apart, so they can drift: a
misspelled metric name, a label added on one side only. Each is an error
naming the probe, the metric and both sides, at the first collection that
shows it, never a series dropped or passed through unseen. prometheus_client's
metric families check label values against declared names the same way.
"""

from __future__ import annotations

from ..figures import Labels, MetricSpec, Series, UndeclaredSeries


class DeclaredSeries:
    """One probe's declarations; `check()` passes its reader's series through, by metric name."""

    def __init__(self, probe):
        self._probe = probe.name
        self._specs = {spec.name: spec for spec in probe.metrics}
        self._label_names = {spec.name: tuple(sorted(spec.labels)) for spec in probe.metrics}

    def check(self, series: Series) -> dict[str, dict[Labels, object]]:
        out = {}
        for metric, by_labels in series.items():
            name = metric.name if isinstance(metric, MetricSpec) else metric
            declared = self._label_names.get(name)
            if declared is None or (isinstance(metric, MetricSpec) and metric != self._specs[name]):
                raise UndeclaredSeries(
                    f"probe {self._probe} returned metric {name!r}, which it does not declare "
                    f"(it declares {', '.join(sorted(self._specs)) or 'none'})")
            for label_set in by_labels:
                names = tuple(label for label, _ in label_set)
                if names != declared:
                    raise UndeclaredSeries(
                        f"probe {self._probe} returned metric {name} with labels {names}; it declares {declared}")
            out[name] = by_labels
        return out
