"""The catalogue: every metric a run exports, as its probes declare them, plus gespann's own.

Exporters map these names to their own conventions (Prometheus adds the
`gespann_` prefix; DogStatsD takes each spec's `dogstatsd` name), but never
invent a metric the catalogue does not have. Label values are bounded sets
(gespann.vocabulary); per-process and per-container labels are opt-in and
capped by the collector.
"""

from __future__ import annotations

from typing import Iterable

from ..figures import MetricSpec, counter, gauge
from ..probes import ALL_PROBES, Probe

#: gespann's own metrics, whatever the probes: they describe the run, not the traffic.
RECORDS_LOST = counter(
    "records_lost_total", ("reader",),
    "Connection records lost: the kernel's buffer was full (reader ringbuf/perf), or gespann's backlog.",
    dogstatsd="records_lost")
PROCESS_CONNECTIONS = counter(
    "process_connections_total", ("comm", "container", "protocol", "outcome"),
    "Ended connections by process and/or container (opt-in labels; beyond the cap: 'other').",
    dogstatsd="process.connections")
PROCESS_BYTES = counter(
    "process_bytes_total", ("comm", "container", "protocol", "direction"),
    "Payload bytes of ended connections by process and/or container (opt-in, capped like the above).",
    unit="bytes", dogstatsd="process.bytes")
PROBE_RUNS_MISSED = counter(
    "probe_runs_missed_total", ("probe",),
    "Runs of a probe's program the kernel skipped because it was already running on that CPU (an interrupt "
    "firing the same event inside it, 5.12+ counts them): those events are not in the other figures.",
    dogstatsd="probe.runs_missed")
PROBE_INFO = gauge("probe_info", ("probe", "mode"), "1 for each attached probe, with the attach flavour it uses.")
BUILD_INFO = gauge("build_info", ("version",), "1, labelled with gespann's version.")
OWN_METRICS = (RECORDS_LOST, PROCESS_CONNECTIONS, PROCESS_BYTES, PROBE_RUNS_MISSED, PROBE_INFO, BUILD_INFO)


def catalogue(probes: Iterable[Probe]) -> tuple[MetricSpec, ...]:
    """The metrics `probes` declare, each once, in order, then gespann's own. Two probes declaring one name
    must declare the same metric: their series are merged."""
    specs: dict[str, MetricSpec] = {}
    for probe in probes:
        for spec in probe.metrics:
            known = specs.setdefault(spec.name, spec)
            if known != spec:
                raise ValueError(f"probe {probe.name} declares metric {spec.name} unlike an earlier probe: "
                                 f"{spec} against {known}")
    for spec in OWN_METRICS:
        if specs.setdefault(spec.name, spec) is not spec:
            raise ValueError(f"metric {spec.name} is gespann's own: a probe may not declare it")
    return tuple(specs.values())


#: Every metric of every probe gespann has, for documentation and tests; a run's catalogue has those of
#: the probes it attached.
CATALOGUE = catalogue(ALL_PROBES)
BY_NAME = {spec.name: spec for spec in CATALOGUE}
