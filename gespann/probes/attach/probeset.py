"""Loading and attaching a set of probes as one unit, and taking it all down again.

For each probe the flavours are tried in order of preference (or only the one
the config forces); the first that loads and attaches wins, and why each
earlier one did not is kept for `gespann probes` and the logs. Either every
probe is attached or none is: a failure part-way closes what was already
loaded, so a failed start leaves nothing in the kernel.

Maps a probe declares as shared are created once for the whole set, by name,
and outlive any one flavour attempt; every probe naming one gets the same map.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from ...bpf.channel import RecordChannel
from ...bpf.errors import BPFError, FeatureUnsupportedError, PermissionDeniedError
from ...bpf.links import Link
from ...bpf.maps import Map
from ...bpf.programs import LoadedProgram, load_program
from ...btf import BTFError
from ..toolkit.flavours import Flavour
from ..toolkit.netns import namespace_inode
from ..toolkit.probe import BuildTarget, Probe

#: attach.probes' mode for a probe left out.
OFF = "off"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttachSettings:
    """How to attach: the config's `attach`, `btf` and `scope` sections."""

    #: "auto" tries every flavour in order; a mode name forces that flavour for every probe that
    #: has one (a probe without it, one on a tracepoint without kprobes, say, tries its own in order).
    mode: str = "auto"
    #: Per-probe forced modes, over `mode`.
    probe_modes: Mapping[str, str] = field(default_factory=dict)
    #: Flavours on perf events (tracepoint, kprobe): "auto", "link" (bpf_link, 5.15+) or "ioctl".
    perf_event_link: str = "auto"
    btf_source: str = "auto"
    netns: Optional[int] = None
    #: Capacities of maps, by map name (config limits.*); a map not named keeps its probe's default.
    capacities: Mapping[str, int] = field(default_factory=dict)
    #: Count ended connections by process in the kernel (config labels.process or labels.container).
    by_process: bool = False
    #: How open connections are read at a collection (config attach.open_connections): "auto" takes the
    #: kernel walks where the kernel can run them, "kernel_walk" insists on them, "user_space" never uses them.
    open_connections: str = "auto"
    #: labels.max_series, which maps of per-owner counts are sized from.
    max_series: int = 100
    #: labels.peers and labels.networks: TCP figures by peer, counted in the kernel.
    peers: bool = False
    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_config(cls, config) -> "AttachSettings":
        return cls(config.attach_mode, dict(config.probe_modes), config.perf_event_attach, config.btf_source,
                   namespace_inode(config.netns) if config.netns else None, dict(config.map_capacities),
                   config.label_process or config.label_container, config.open_connections,
                   config.label_max_series, config.label_peers, config.label_networks)

    def kernel_walk(self, probes: Iterable[Probe]) -> bool:
        """Whether to build for the walks that shape the build (state in socket storage): asked for, and
        nothing known to rule it out. Whether the kernel runs it shows in the attaching (ProbeSet.attach
        attaches again without it if not), not in a trial beforehand, which would cost start-up time."""
        probes = tuple(probes)
        walks = [probe.walk for probe in probes if probe.walk is not None and probe.walk.shapes_build]
        if self.open_connections == "user_space" or not walks:
            return False
        for walk in walks:
            forced = [f"{probe.name} attached as {self.candidates(probe)[0].mode}" for probe in probes
                      if walk.typed_sockets_for in probe.shared_maps and not self.candidates(probe)[0].btf_pointers]
            if forced:
                if self.open_connections == "kernel_walk":
                    raise FeatureUnsupportedError(f"the kernel walk of {walk.subject} with {forced[0]}", walk.since,
                                                  reason="socket storage needs the fentry or tp_btf flavour of "
                                                         "every probe that shares the connection state")
                log.debug("%s are read with %s: %s cannot use socket storage", walk.subject, walk.fallback,
                          forced[0])
                return False
            why = walk.missing_prerequisite(self.btf_source)
            if why is None:
                continue
            if self.open_connections == "kernel_walk":
                raise FeatureUnsupportedError(f"the kernel walk of {walk.subject} (attach.open_connections: "
                                              "kernel_walk)", walk.since, reason=why)
            log.info("%s are read with %s, not the kernel walk: %s", walk.subject, walk.fallback, why)
            return False
        return True

    def candidates(self, probe: Probe) -> tuple[Flavour, ...]:
        mode = self.probe_modes.get(probe.name)
        if mode is None and any(flavour.mode == self.mode for flavour in probe.flavours):
            mode = self.mode
        return probe.flavours if mode in (None, "auto") else (probe.flavour(mode),)


def group_reasons(reasons: Mapping[str, str]) -> list[tuple[tuple[str, ...], str]]:
    """Flavours grouped by the reason they were not taken, in order: a reason that is not the flavour's
    own (no kernel types at all, say) is then said once, not once per flavour."""
    grouped: dict[str, list[str]] = {}
    for flavour, why in reasons.items():
        grouped.setdefault(why, []).append(flavour)
    return [(tuple(flavours), why) for why, flavours in grouped.items()]


class ProbeUnavailable(BPFError):
    """No flavour of a probe could be attached; the message gives each flavour's reason."""

    def __init__(self, probe: str, reasons: Mapping[str, str]):
        self.probe, self.reasons = probe, dict(reasons)
        detail = "; ".join(f"{', '.join(flavours)}: {why}" for flavours, why in group_reasons(reasons))
        super().__init__(f"probe {probe} cannot attach on this kernel: {detail}")


@dataclass
class AttachedProbe:
    probe: Probe
    flavour: Flavour
    maps: dict[str, Map]
    #: One program and link per flavour target.
    programs: tuple[LoadedProgram, ...]
    links: tuple[Link, ...]
    #: Flavours tried before this one, with the reason each was not taken.
    passed_over: dict[str, str] = field(default_factory=dict)
    #: What its program was built for (kernel types, scope), for the reader.
    target: Optional[BuildTarget] = None

    @property
    def path(self) -> str:
        """How the bpf layer attached it: `bpf_link`, `perf_event_ioctl`, `raw_tracepoint_open`..."""
        return self.links[0].mode.value


class ProbeSet:
    """Attached probes by name; closing the set detaches and unloads all of them."""

    def __init__(self, attached: Iterable[AttachedProbe], resources: ExitStack, walks: Mapping[str, object] = {}):
        self.probes = {a.probe.name: a for a in attached}
        #: The kernel walk each probe offering one has, by probe name: None where user space reads instead.
        self.walks = {name: walks.get(name) for name, a in self.probes.items() if a.probe.walk is not None}
        self._resources = resources

    @classmethod
    def attach(cls, probes: Iterable[Probe], settings: AttachSettings = AttachSettings(),
               records: Optional[RecordChannel] = None) -> "ProbeSet":
        """Attach every probe, or none. With `records`, probes that make connection records send them
        there (the caller owns the channel, and closes it after the set)."""
        probes = tuple(probes)
        target = BuildTarget(settings.btf_source, settings.netns, records, settings.by_process,
                             settings.kernel_walk(probes), settings.max_series,
                             kernel_needs=tuple((probe.name, probe.kernel) for probe in probes if probe.kernel),
                             peers=settings.peers, networks=settings.networks)
        typed = {probe.walk.typed_sockets_for for probe in probes
                 if probe.walk is not None and probe.walk.shapes_build and probe.walk.typed_sockets_for}
        while True:
            try:
                with ExitStack() as stack:
                    shared: dict[str, Map] = dict(records.maps) if records is not None else {}
                    attached = [a for a in (_attach_first_flavour(probe, settings, target, stack, shared, typed)
                                            for probe in probes) if a is not None]
                    walks = {a.probe.name: _attach_walk(a, target, settings, stack)
                             for a in attached if a.probe.walk is not None}
                    return cls(attached, stack.pop_all(), walks)
            except _UntypedSockets as untyped:
                # Socket storage needs every probe that shares connection state to see sockets as BTF
                # pointers; one that attaches another way means the map, for all of them.
                why = f"{untyped} cannot use socket storage (it needs the fentry or tp_btf flavour)"
            except PermissionDeniedError as err:
                if err.missing or not target.kernel_walk:
                    raise
                why = str(err).splitlines()[0]
            except (BPFError, BTFError) as err:
                if not target.kernel_walk:
                    raise  # nothing of the walk's was tried: the error is the set's own
                why = str(err).splitlines()[0]
            subjects = [probe.walk for probe in probes if probe.walk is not None and probe.walk.shapes_build]
            if settings.open_connections == "kernel_walk":
                raise FeatureUnsupportedError(f"the kernel walk of {subjects[0].subject} (attach.open_connections: "
                                              "kernel_walk)", subjects[0].since, reason=why)
            log.info("%s are read with %s, and connections kept in a map: %s", subjects[0].subject,
                     subjects[0].fallback, why)
            target = dataclasses.replace(target, kernel_walk=False)

    @classmethod
    def attach_all(cls, config, records: Optional[RecordChannel] = None) -> "ProbeSet":
        """Every probe gespann has for the protocols `config` watches, and the config's extra probes, attached
        as it asks."""
        return cls.attach(selected_probes(config), AttachSettings.from_config(config), records)

    def __getitem__(self, name: str) -> AttachedProbe:
        return self.probes[name]

    def __len__(self) -> int:
        return len(self.probes)

    def summary(self) -> str:
        """`name=raw_tracepoint/inet_sock_set_state, ...` for the start-up log line, then how open
        connections are read."""
        probes = ", ".join(f"{name}={a.flavour}({a.path})" for name, a in self.probes.items())
        walks = [f"{self[name].probe.walk.subject} by {'the kernel walk' if walk else self[name].probe.walk.fallback}"
                 for name, walk in self.walks.items()]
        return "; ".join([probes, *walks])

    def close(self) -> None:
        self._resources.close()

    def __enter__(self) -> "ProbeSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def selected_probes(config) -> list[Probe]:
    """The probes `config` has gespann attach: gespann's and its extra ones, less those of protocols
    scope.protocols leaves out and those attach.probes turns off."""
    from .. import available_probes

    return [probe for probe in available_probes(config.extra_probes)
            if probe.watches(config.protocols) and config.probe_modes.get(probe.name) != OFF and probe.wanted(config)]


@dataclass(frozen=True)
class TrialResult:
    """What attaching one probe here gives: the flavour taken (or None) and why others were not."""

    probe: str
    flavour: Optional[str]
    path: Optional[str]  # how the bpf layer attached it, e.g. "raw_tracepoint_open"
    passed_over: Mapping[str, str]
    error: Optional[str] = None
    #: Whether `gespann run` needs it (Probe.required): one it can do without is left out, not fatal.
    required: bool = True


def trial_attach(probe: Probe, settings: AttachSettings) -> TrialResult:
    """Attach `probe` and detach it again: the kernel's own answer to "which flavour, and why"."""
    trial = dataclasses.replace(probe, required=True)  # to hear why, where a run would leave it out
    try:
        with ProbeSet.attach([trial], settings) as attached:
            a = attached[probe.name]
            return TrialResult(probe.name, str(a.flavour), a.path, dict(a.passed_over), required=probe.required)
    except ProbeUnavailable as err:
        return TrialResult(probe.name, None, None, err.reasons, str(err), required=probe.required)
    except BPFError as err:
        return TrialResult(probe.name, None, None, {}, str(err), required=probe.required)


def _attach_first_flavour(probe: Probe, settings: AttachSettings, target: BuildTarget,
                          stack: ExitStack, shared: dict[str, Map], typed: set[str]) -> Optional[AttachedProbe]:
    """The probe attached by its first flavour the kernel takes; None for a probe gespann can run without
    (Probe.required False) that no flavour attaches, said in the log."""
    shared_wanted = [name for name in probe.shared_maps if probe.wants(name, target)]
    for name in shared_wanted:
        if name not in shared:
            shared[name] = stack.enter_context(_create(name, probe.shared_maps[name], settings, target))
    passed_over: dict[str, str] = {}
    for flavour in settings.candidates(probe):
        _check_typed_sockets(probe, flavour, target, typed)
        try:
            with ExitStack() as attempt:
                wanted = (*shared_wanted, *(target.records.maps if target.records is not None else ()))
                attached = _attach_flavour(probe, flavour, settings, target, attempt,
                                           {name: shared[name] for name in wanted})
                stack.enter_context(attempt.pop_all())
        except PermissionDeniedError as err:
            if err.missing:
                raise  # no flavour can do better without the capability: say so once
            log.info("probe %s: %s not taken: %s", probe.name, flavour, err)
            passed_over[str(flavour)] = str(err)
            continue
        except (BPFError, BTFError) as err:
            log.info("probe %s: %s not taken: %s", probe.name, flavour, err)
            passed_over[str(flavour)] = str(err)
            continue
        attached.passed_over = passed_over
        log.debug("probe %s attached as %s via %s", probe.name, flavour, attached.path)
        return attached
    if not probe.required:
        log.warning("%s; it is left out, and its figures with it", ProbeUnavailable(probe.name, passed_over))
        return None
    raise ProbeUnavailable(probe.name, passed_over)


class _UntypedSockets(Exception):
    """A probe sharing connection state in socket storage is about to attach with a flavour whose sockets
    are plain addresses: the set must be attached again with the state in a map."""


def _check_typed_sockets(probe: Probe, flavour: Flavour, target: BuildTarget, typed: set[str]) -> None:
    if target.kernel_walk and not flavour.btf_pointers and any(name in probe.shared_maps for name in typed):
        raise _UntypedSockets(f"{probe.name} attached as {flavour.mode}")


def _attach_walk(attached: AttachedProbe, target: BuildTarget, settings: AttachSettings, stack: ExitStack):
    """The kernel walk a probe offers, or None where user space reads instead. One that shapes the build
    is attached only when the set was built for it, and its errors go to ProbeSet.attach, which builds the
    set again without it; any other is tried for real here, since nothing else depends on it."""
    walk = attached.probe.walk
    if walk.shapes_build:
        return walk.attach(attached, target, stack) if target.kernel_walk else None
    if settings.open_connections == "user_space":
        return None
    try:
        return walk.attach(attached, target, stack)
    except PermissionDeniedError as err:
        if err.missing:
            raise
        why = str(err).splitlines()[0]
    except (BPFError, BTFError, KeyError) as err:
        why = str(err).splitlines()[0]
    if settings.open_connections == "kernel_walk":
        raise FeatureUnsupportedError(f"the kernel walk of {walk.subject} (attach.open_connections: kernel_walk)",
                                      walk.since, reason=why)
    log.info("%s are read by %s, not by a kernel walk: %s", walk.subject, walk.fallback, why)
    return None


def _create(name: str, create, settings: AttachSettings, target: Optional[BuildTarget] = None) -> Map:
    """A probe's map, with the capacity the settings give its name, if any; a factory with a `target`
    parameter also gets the build target (a map whose kind depends on it)."""
    capacity = settings.capacities.get(name)
    extra = {"target": target} if target is not None and "target" in inspect.signature(create).parameters else {}
    return create(**extra) if capacity is None else create(capacity, **extra)


def _attach_flavour(probe: Probe, flavour: Flavour, settings: AttachSettings, target: BuildTarget,
                    stack: ExitStack, shared: Mapping[str, Map]) -> AttachedProbe:
    maps = {**shared, **{name: stack.enter_context(_create(name, create, settings, target))
                         for name, create in probe.maps.items() if probe.wants(name, target)}}
    code = probe.program(flavour, target)
    kernel_types = lambda: target.kernel_types  # noqa: E731 - resolved only if the flavour needs it
    programs, links = [], []
    for site in flavour.targets:
        program = stack.enter_context(load_program(code, maps=maps, **flavour.load_options(site, kernel_types)))
        links.append(stack.enter_context(flavour.attach(program, site, settings.perf_event_link)))
        programs.append(program)
    return AttachedProbe(probe, flavour, maps, tuple(programs), tuple(links), target=target)
