"""Loading and attaching a set of probes as one unit, and taking it all down again.

Either every probe is attached or none is: a failure part-way closes what was
already loaded, so a failed start leaves nothing in the kernel.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from ..bpf.links import AttachMode, Link, attach_tracepoint
from ..bpf.maps import Map
from ..bpf.programs import LoadedProgram, load_program
from .probe import Probe

log = logging.getLogger(__name__)

#: config `attach.tracepoint` -> the bpf layer's mode (None lets it choose).
TRACEPOINT_MODES: Mapping[str, Optional[AttachMode]] = {
    "auto": None,
    "link": AttachMode.LINK,
    "ioctl": AttachMode.PERF_IOCTL,
}


@dataclass
class AttachedProbe:
    probe: Probe
    maps: dict[str, Map]
    program: LoadedProgram
    link: Link


class ProbeSet:
    """Attached probes by name; closing the set detaches and unloads all of them."""

    def __init__(self, attached: Iterable[AttachedProbe], resources: ExitStack):
        self.probes = {a.probe.name: a for a in attached}
        self._resources = resources

    @classmethod
    def attach(cls, probes: Iterable[Probe], tracepoint_attach: str = "auto") -> "ProbeSet":
        mode = TRACEPOINT_MODES[tracepoint_attach]
        with ExitStack() as stack:
            attached = [_attach_one(probe, mode, stack) for probe in probes]
            return cls(attached, stack.pop_all())

    @classmethod
    def attach_all(cls, config) -> "ProbeSet":
        """Every probe gespann has, attached as `config` asks."""
        from . import ALL_PROBES

        return cls.attach(ALL_PROBES, config.tracepoint_attach)

    def __getitem__(self, name: str) -> AttachedProbe:
        return self.probes[name]

    def __len__(self) -> int:
        return len(self.probes)

    def summary(self) -> str:
        """`tcp_states@sock:inet_sock_set_state(bpf_link), ...` for the start-up log line."""
        return ", ".join(f"{name}@{a.link.target}({a.link.mode.value})" for name, a in self.probes.items())

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> "ProbeSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attach_one(probe: Probe, mode: Optional[AttachMode], stack: ExitStack) -> AttachedProbe:
    maps = {name: stack.enter_context(create()) for name, create in probe.maps.items()}
    program = stack.enter_context(load_program(probe.program(), maps=maps))
    link = stack.enter_context(attach_tracepoint(program, probe.category, probe.event, mode=mode))
    log.debug("attached %s to %s via %s", probe.name, link.target, link.mode.value)
    return AttachedProbe(probe, maps, program, link)
