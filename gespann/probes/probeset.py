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
from .netns import namespace_inode
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
    def attach(cls, probes: Iterable[Probe], tracepoint_attach: str = "auto", btf_source: str = "auto",
               netns: Optional[int] = None) -> "ProbeSet":
        """Load and attach `probes`; `netns` (a namespace inode) limits them to one network namespace."""
        mode = TRACEPOINT_MODES[tracepoint_attach]
        with ExitStack() as stack:
            attached = [_attach_one(probe, mode, btf_source, netns, stack) for probe in probes]
            return cls(attached, stack.pop_all())

    @classmethod
    def attach_all(cls, config) -> "ProbeSet":
        """Every probe gespann has, attached as `config` asks."""
        from . import ALL_PROBES

        netns = namespace_inode(config.netns) if config.netns else None
        return cls.attach(ALL_PROBES, config.tracepoint_attach, config.btf_source, netns)

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


def _attach_one(probe: Probe, mode: Optional[AttachMode], btf_source: str, netns: Optional[int],
                stack: ExitStack) -> AttachedProbe:
    maps = {name: stack.enter_context(create()) for name, create in probe.maps.items()}
    program = stack.enter_context(load_program(probe.program(btf_source, netns), maps=maps))
    link = stack.enter_context(attach_tracepoint(program, probe.category, probe.event, mode=mode))
    log.debug("attached %s to %s via %s", probe.name, link.target, link.mode.value)
    return AttachedProbe(probe, maps, program, link)


def planned_attach(probe: Probe, tracepoint_attach: str = "auto") -> str:
    """How `probe` would attach here, without attaching: e.g. `bpf_link` or `perf_event_ioctl`.

    Raises the bpf layer's error when the tracepoint is missing or a forced mode is unsupported.
    """
    from ..bpf import features
    from ..bpf.errors import FeatureUnsupportedError

    probe.tracepoint_format()  # TracepointNotFoundError names the tracepoint and kernel release
    mode = TRACEPOINT_MODES[tracepoint_attach]
    has_link = features.has_perf_link()
    if mode is AttachMode.LINK and not has_link:
        raise FeatureUnsupportedError("bpf_link for perf events", features.PERF_LINK_SINCE)
    return (mode or (AttachMode.LINK if has_link else AttachMode.PERF_IOCTL)).value
