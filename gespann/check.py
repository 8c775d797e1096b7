"""`gespann check`: what this host offers gespann, and what gespann would do with it.

Every answer comes from asking the kernel (loading, attaching, reading), never
from version numbers, so backports and locked-down nodes are reported as they
are. The report is data first (`as_dict`), text second (`lines`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from .bpf import features
from .bpf.errors import effective_capabilities
from .btf import BTFError, kernel_types
from .config import Config
from .probes import (
    AttachSettings,
    CheckContext,
    TrialResult,
    available_probes,
    group_reasons,
    selected_probes,
    trial_attach,
)
from .probes.attach.probeset import OFF

#: Capabilities gespann needs (CAP_SYS_ADMIN covers both, as it does in the kernel).
NEEDED_CAPABILITIES = ("CAP_BPF", "CAP_PERFMON")


@dataclass
class CheckReport:
    kernel: str
    machine: str
    capabilities: dict[str, bool]
    missing_capabilities: list[str]
    type_information: Optional[str]  # where struct offsets come from
    type_information_error: Optional[str]
    features: list[features.FeatureStatus]
    probes: list[TrialResult]
    #: What each probe says of the paths it takes here (Probe.checks), as (key, title, text): how open
    #: connections are read, whether drops are named by reason...
    paths: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def fatal(self) -> Optional[str]:
        """Why gespann cannot run at all, or None when it can (perhaps with fallbacks)."""
        if self.missing_capabilities:
            return f"missing {', '.join(self.missing_capabilities)}: run as root or grant them"
        unavailable = [p.probe for p in self.probes if not p.flavour and p.required]
        if unavailable:  # `gespann run` attaches every probe it needs, or none
            return f"{', '.join(unavailable)} cannot attach on this kernel (reasons above)"
        return None

    def as_dict(self) -> dict:
        report = asdict(self)
        del report["paths"]
        return {**report, **{key: text for key, _, text in self.paths}, "fatal": self.fatal}

    def lines(self) -> list[str]:
        out = [f"kernel          {self.kernel} ({self.machine})"]
        held = ", ".join(f"{cap} {'yes' if ok else 'NO'}" for cap, ok in self.capabilities.items())
        out.append(f"privileges      {held}")
        out.append(f"type info       {self.type_information or 'unavailable: ' + str(self.type_information_error)}")
        out.append("features")
        for feature in self.features:
            state = "yes" if feature.available else "no "
            out.append(f"  {state} {feature.description:<58} Linux {feature.since:<5} {feature.detail}")
        out.append("probes")
        width = max([16, *(len(probe.probe) for probe in self.probes)])  # the longest name sets the column
        for probe in self.probes:
            if probe.flavour:
                out.append(f"  {probe.probe:<{width}} {probe.flavour} via {probe.path}")
            elif probe.required:
                out.append(f"  {probe.probe:<{width}} UNAVAILABLE")
            else:
                out.append(f"  {probe.probe:<{width}} left out: no flavour attaches here, and gespann runs without it")
            for flavours, why in group_reasons(probe.passed_over):
                out.append(f"  {'':<{width}}   not {', '.join(flavours)}: {why}")
        for _, title, text in self.paths:
            out.append(f"{title:<16}{text}")
        out.append(f"verdict         {'cannot run: ' + self.fatal if self.fatal else 'ready'}")
        return out


def run_check(config: Config) -> CheckReport:
    uname = os.uname()
    held = effective_capabilities() or set()
    capabilities = {cap: cap in held or "CAP_SYS_ADMIN" in held for cap in NEEDED_CAPABILITIES}
    missing = [cap for cap, ok in capabilities.items() if not ok]
    types, types_error = _type_information(config.btf_source)
    return CheckReport(
        kernel=uname.release,
        machine=uname.machine,
        capabilities=capabilities,
        missing_capabilities=missing,
        type_information=types,
        type_information_error=types_error,
        features=[] if missing else features.report(),
        probes=(probes := _probes(config, missing)),
        paths=_paths(config, probes, missing),
    )


def _paths(config: Config, trials: list[TrialResult], missing: list[str]) -> list[tuple[str, str, str]]:
    """Each probe's own lines on the paths it takes (Probe.checks), in the probes' order; a probe the
    config leaves out says why. Without the privileges nothing can be tried, and nothing is said."""
    if missing:
        return []
    selected = selected_probes(config)
    context = CheckContext(AttachSettings.from_config(config), selected, trials)
    paths = []
    for probe in available_probes(config.extra_probes):
        for line in probe.checks:
            if probe in selected:
                paths.append((line.key, line.title, line.describe(context)))
            else:
                paths.append((line.key, line.title, f"{line.when_left_out}: {_left_out(probe, config)}"))
    return paths


def _left_out(probe, config: Config) -> str:
    if config.probe_modes.get(probe.name) == OFF:
        return f"attach.probes.{probe.name}: off"
    if not probe.watches(config.protocols):
        return f"scope.protocols leaves out {probe.protocol}"
    return "the config asks for nothing it serves"


def _type_information(source: str) -> tuple[Optional[str], Optional[str]]:
    try:
        return kernel_types(source).source, None
    except BTFError as err:
        return None, str(err)


def _probes(config: Config, missing: list[str]) -> list[TrialResult]:
    if missing:
        return [TrialResult(p.name, None, None, {}, "not tried: missing privileges") for p in selected_probes(config)]
    settings = AttachSettings.from_config(config)
    return [trial_attach(probe, settings) for probe in selected_probes(config)]
