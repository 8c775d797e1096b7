"""gespann's probes, each one file written with the asm DSL, and what attaches them.

The layout:
  tcp/       the TCP probes (lifecycle.py, resets.py) and what serves them: their
             reader (metrics.py), kernel walk (walk.py), records (records.py), maps
  udp/       the UDP probes (send.py, receive.py), their reader, walk and flow map
  drops/     packet_drops.py, and the kernel's drop reasons
  examples/  tcp_states.py: the smallest complete probe, not part of the product
  toolkit/   what probes are written with; authors import it through authoring.py
  attach/    loading and attaching a set of probes, and probes from outside the tree
  authoring.py  the one public module for probe authors

Nothing outside a probe's own package names it: the collector, the exporters
and `gespann check` see only what each probe declares (toolkit/probe.py).
"""

from __future__ import annotations

from typing import Optional, Sequence

from .attach.extensions import ExtensionError, load_probes
from .attach.probeset import (
    AttachedProbe,
    AttachSettings,
    ProbeSet,
    ProbeUnavailable,
    TrialResult,
    group_reasons,
    selected_probes,
    trial_attach,
)
from .drops import inbound_refused, packet_drops
from .examples import tcp_states
from .tcp import icmp_errors as tcp_icmp_errors
from .tcp import lifecycle as tcp_lifecycle
from .tcp import nat as tcp_nat
from .tcp import resets as tcp_resets
from .tcp import unseen_ends as tcp_unseen_ends
from .toolkit.probe import BuildTarget, CheckContext, CheckLine, KernelWalk, Probe, RecordDecoder, object_name
from .toolkit.reading import OwnerCounts, ReadContext, Reader
from .udp import UDP_PROBES

#: Every probe `gespann run` attaches, in attach order. A new probe of gespann's is one file and one entry here;
#: one outside the tree is named in the config (extra_probes) instead.
ALL_PROBES: tuple[Probe, ...] = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_icmp_errors.PROBE,
                                 tcp_unseen_ends.PROBE, *UDP_PROBES, packet_drops.PROBE, inbound_refused.PROBE,
                                 tcp_nat.PROBE)

#: Probes that are not part of the product: tcp_states is the smallest complete probe,
#: the one to read (and copy) before writing a new one.
EXAMPLE_PROBES: tuple[Probe, ...] = (tcp_states.PROBE,)


def available_probes(extra: Sequence[str] = ()) -> tuple[Probe, ...]:
    """gespann's probes, then those of each extra source (config extra_probes), in order; ExtensionError if
    a name is taken twice."""
    probes = list(ALL_PROBES)
    for source in extra:
        for probe in load_probes(source):
            for known in (*probes, *EXAMPLE_PROBES):
                if known.name == probe.name:
                    raise ExtensionError(f"{source}: a probe called {probe.name} is already there; rename it")
                if object_name(known.name) == object_name(probe.name):
                    raise ExtensionError(
                        f"{source}: probe {probe.name}'s program would be called {object_name(probe.name)} in the "
                        f"kernel, which keeps 15 characters, as {known.name}'s is: rename it so that the first "
                        f"{15 - len('gsp_')} characters differ")
            probes.append(probe)
    return tuple(probes)


def find_probe(name: str, extra: Sequence[str] = ()) -> Optional[Probe]:
    return next((probe for probe in (*available_probes(extra), *EXAMPLE_PROBES) if probe.name == name), None)


__all__ = ["ALL_PROBES", "EXAMPLE_PROBES", "AttachSettings", "AttachedProbe", "BuildTarget", "CheckContext",
           "CheckLine", "ExtensionError", "KernelWalk", "OwnerCounts", "Probe", "ProbeSet", "ProbeUnavailable",
           "ReadContext", "Reader", "RecordDecoder", "TrialResult", "object_name",
           "available_probes", "find_probe", "group_reasons", "load_probes", "selected_probes", "trial_attach"]
