"""`gespann check`: what this host offers gespann, and what gespann would do with it.

Every answer comes from asking the kernel (loading, attaching, reading), never
from version numbers, so backports and locked-down nodes are reported as they
are. The report is data first (`as_dict`), text second (`lines`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

from .bpf import features
from .bpf.errors import effective_capabilities
from .btf import BTFError, kernel_types
from .config import Config
from .probes import (
    ALL_PROBES,
    AttachSettings,
    TrialResult,
    group_reasons,
    packet_drops,
    selected_probes,
    tcp_icmp_errors,
    tcp_walk,
    trial_attach,
    udp_walk,
)
from .probes.tcp_connections import ENTRIES

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
    #: How a collection reads open TCP connections, and the UDP flow map, and why that way.
    open_connections: str = ""
    udp_flows: str = ""
    #: Whether dropped packets are counted by the kernel's reason, and why not.
    drop_reasons: str = ""
    #: How exact a failed connect's reason is when the application reads SO_ERROR first, and what is left.
    failure_reasons: str = ""

    @property
    def fatal(self) -> Optional[str]:
        """Why gespann cannot run at all, or None when it can (perhaps with fallbacks)."""
        if self.missing_capabilities:
            return f"missing {', '.join(self.missing_capabilities)}: run as root or grant them"
        unavailable = [p.probe for p in self.probes if not p.flavour]
        if unavailable:  # `gespann run` attaches every probe or none
            return f"{', '.join(unavailable)} cannot attach on this kernel (reasons above)"
        return None

    def as_dict(self) -> dict:
        return {**asdict(self), "fatal": self.fatal}

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
        for probe in self.probes:
            if probe.flavour:
                out.append(f"  {probe.probe:<16} {probe.flavour} via {probe.path}")
            else:
                out.append(f"  {probe.probe:<16} UNAVAILABLE")
            for flavours, why in group_reasons(probe.passed_over):
                out.append(f"  {'':<16}   not {', '.join(flavours)}: {why}")
        if self.open_connections:
            out.append(f"open conns      {self.open_connections}")
        if self.udp_flows:
            out.append(f"udp flows       {self.udp_flows}")
        if self.drop_reasons:
            out.append(f"drop reasons    {self.drop_reasons}")
        if self.failure_reasons:
            out.append(f"failed reasons  {self.failure_reasons}")
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
        open_connections="" if missing else _open_connections(config, probes),
        udp_flows="" if missing else _udp_flows(config),
        drop_reasons=_drop_reasons(config),
        failure_reasons="" if missing else _failure_reasons(config, probes),
    )


def _failure_reasons(config: Config, probes: list[TrialResult]) -> str:
    """Where a failed connect's reason comes from when the application took sk_err first (see
    probes/tcp_lifecycle.py and probes/tcp_icmp_errors.py)."""
    if "tcp" not in config.protocols:
        return "not counted: scope.protocols leaves out tcp"
    base = "refused and timeouts exact whatever the application reads"
    left = "an ICMP error from another machine that the application reads first counts as aborted"
    icmp = next((trial for trial in probes if trial.probe == tcp_icmp_errors.PROBE.name), None)
    if icmp is None or not icmp.flavour:
        why = "attach.probes.tcp_icmp_errors: off" if icmp is None else "tcp_icmp_errors cannot attach"
        return f"{base}; any ICMP error the application reads first counts as aborted ({why})"
    return f"{base}, and ICMP errors this host sends (tcp_icmp_errors: {icmp.flavour}); {left}"


def _drop_reasons(config: Config) -> str:
    """Whether packet_drops names the kernel's reasons (see probes/packet_drops.py)."""
    if config.probe_modes.get(packet_drops.PROBE.name) == "off":
        return "not counted: attach.probes.packet_drops: off"
    try:
        types = kernel_types(config.btf_source)
    except BTFError:
        types = None
    return packet_drops.reasons_available(types)


def _open_connections(config: Config, probes: list[TrialResult]) -> str:
    """The path `gespann run` takes to read open TCP connections (see probes/tcp_walk.py), and why."""
    if "tcp" not in config.protocols:
        return "not read: scope.protocols leaves out tcp"
    fallback = "sock_diag, a dump per collection whose cost grows with the connections open"
    if config.open_connections == "user_space":
        return f"{fallback} (attach.open_connections: user_space)"
    why = tcp_walk.unavailable_reason(config.btf_source)
    if why is not None:
        return f"{fallback}: {why}"
    sharing = {probe.name for probe in ALL_PROBES if ENTRIES in probe.shared_maps}
    for trial in probes:
        if trial.probe in sharing and trial.flavour and not trial.flavour.startswith(tcp_walk.STORAGE_FLAVOURS):
            return f"{fallback}: {trial.probe} attaches as {trial.flavour}, which cannot use socket storage"
    return ("kernel walk (iter/tcp over socket storage): counted in the kernel, once, at any number of "
            "connections; none evicted past limits.tcp_connections")


def _udp_flows(config: Config) -> str:
    """The path `gespann run` takes to read the UDP flow map (see probes/udp_walk.py), and why."""
    if "udp" not in config.protocols:
        return "not read: scope.protocols leaves out udp"
    fallback = "one pass over the flow map in user space, whose cost grows with the flows"
    if config.open_connections == "user_space":
        return f"{fallback} (attach.open_connections: user_space)"
    why = udp_walk.unavailable_reason(config.btf_source)
    if why is not None:
        return f"{fallback}: {why}"
    return "kernel walk (iter/bpf_map_elem): counted in the kernel; only ended flows are read out"


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
