"""gespann's probe points, one module each, written with the asm DSL."""

from __future__ import annotations

from typing import Optional

from . import tcp_lifecycle, tcp_resets, tcp_states
from .udp import UDP_PROBES
from .extensions import ExtensionError, load_probes
from .probe import BuildTarget, Probe
from .reading import OwnerCounts, ReadContext, Reader
from .probeset import (
    AttachedProbe,
    AttachSettings,
    ProbeSet,
    ProbeUnavailable,
    TrialResult,
    group_reasons,
    trial_attach,
)

#: Every probe `gespann run` attaches, in attach order. A new probe of gespann's is one file and one entry here;
#: one outside the tree is named in the config (extra_probes) instead.
ALL_PROBES: tuple[Probe, ...] = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, *UDP_PROBES)

#: Probes that are not part of the product: tcp_states is the smallest complete probe,
#: the one to read (and copy) before writing a new one.
EXAMPLE_PROBES: tuple[Probe, ...] = (tcp_states.PROBE,)


def find_probe(name: str) -> Optional[Probe]:
    return next((probe for probe in (*ALL_PROBES, *EXAMPLE_PROBES) if probe.name == name), None)


__all__ = ["ALL_PROBES", "EXAMPLE_PROBES", "AttachSettings", "AttachedProbe", "BuildTarget", "ExtensionError",
           "OwnerCounts", "Probe", "ProbeSet", "ProbeUnavailable", "ReadContext", "Reader", "TrialResult",
           "find_probe", "group_reasons", "load_probes", "trial_attach"]
