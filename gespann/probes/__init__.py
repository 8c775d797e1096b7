"""gespann's probe points, one module each, written with the asm DSL."""

from __future__ import annotations

from typing import Optional, Sequence

from . import packet_drops, tcp_icmp_errors, tcp_lifecycle, tcp_resets, tcp_states
from .extensions import ExtensionError, load_probes
from .probe import BuildTarget, Probe
from .probeset import (
    AttachedProbe,
    AttachSettings,
    ProbeSet,
    ProbeUnavailable,
    TrialResult,
    group_reasons,
    selected_probes,
    trial_attach,
)
from .reading import OwnerCounts, ReadContext, Reader
from .udp import UDP_PROBES

#: Every probe `gespann run` attaches, in attach order. A new probe of gespann's is one file and one entry here;
#: one outside the tree is named in the config (extra_probes) instead.
ALL_PROBES: tuple[Probe, ...] = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_icmp_errors.PROBE, *UDP_PROBES,
                                 packet_drops.PROBE)

#: Probes that are not part of the product: tcp_states is the smallest complete probe,
#: the one to read (and copy) before writing a new one.
EXAMPLE_PROBES: tuple[Probe, ...] = (tcp_states.PROBE,)


def available_probes(extra: Sequence[str] = ()) -> tuple[Probe, ...]:
    """gespann's probes, then those of each extra source (config extra_probes), in order; ExtensionError if
    a name is taken twice."""
    probes = list(ALL_PROBES)
    for source in extra:
        for probe in load_probes(source):
            if any(known.name == probe.name for known in (*probes, *EXAMPLE_PROBES)):
                raise ExtensionError(f"{source}: a probe called {probe.name} is already there; rename it")
            probes.append(probe)
    return tuple(probes)


def find_probe(name: str, extra: Sequence[str] = ()) -> Optional[Probe]:
    return next((probe for probe in (*available_probes(extra), *EXAMPLE_PROBES) if probe.name == name), None)


__all__ = ["ALL_PROBES", "EXAMPLE_PROBES", "AttachSettings", "AttachedProbe", "BuildTarget", "ExtensionError",
           "OwnerCounts", "Probe", "ProbeSet", "ProbeUnavailable", "ReadContext", "Reader", "TrialResult",
           "available_probes", "find_probe", "group_reasons", "load_probes", "selected_probes", "trial_attach"]
