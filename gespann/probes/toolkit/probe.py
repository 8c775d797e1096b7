"""A probe: one probe point, its flavours, the maps its program writes, and the program's body.

A probe module (one per probe point) declares a `Probe`;
`ProbeSet` picks the first flavour the kernel accepts and attaches it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from asm import R1, R6, Program

from ...bpf.channel import RecordChannel
from ...bpf.maps import Map
from ...btf import KernelTypes, kernel_types
from ...btf.manifest import NO_NEEDS, KernelNeeds
from ...figures import MetricSpec
from .arguments import Arguments, Derivations
from .flavours import Flavour

if TYPE_CHECKING:
    from contextlib import ExitStack

    from ...figures import ConnectionEvent
    from ..attach.probeset import AttachedProbe, AttachSettings, TrialResult


#: The kernel keeps 15 characters of a BPF object's name (BPF_OBJ_NAME_LEN, less the NUL).
OBJECT_NAME_LENGTH = 15


def object_name(probe_name: str) -> str:
    """A probe's program name as the kernel keeps it: `gsp_` and the probe's name, cut to 15 characters."""
    return f"gsp_{probe_name}"[:OBJECT_NAME_LENGTH]


@dataclass(frozen=True)
class BuildTarget:
    """What a program is built for: where kernel types come from, the scope to watch, and
    whether connection records are wanted.

    Kernel types are resolved on first use, so a flavour that needs no struct
    offsets never pays for BTF.
    """

    btf_source: str = "auto"
    #: Only sockets in this network namespace (its inode number) are seen; None sees all.
    netns: Optional[int] = None
    #: Where probes send per-connection records; None: no records, and no code for them.
    records: Optional[RecordChannel] = field(default=None, compare=False)
    #: Count ended connections by process (cgroup and comm) in the kernel: per-process labels asked for.
    by_process: bool = False
    #: Open connections are counted by a kernel walk that shapes the build (KernelWalk.shapes_build): the
    #: probes sharing its state keep it where the walk can find it (socket storage).
    kernel_walk: bool = False
    #: labels.max_series: what a map of per-owner counts is sized from (a factory taking `target` reads it).
    max_series: int = 100
    #: (probe name, what it needs from the kernel beyond gespann's manifest) of the probes built for this
    #: target: resolved with the manifest.
    kernel_needs: tuple[tuple[str, KernelNeeds], ...] = ()
    #: Count TCP figures by peer in the kernel (labels.peers), with remote addresses grouped by these named
    #: networks (labels.networks): (name, (CIDR, ...)) each.
    peers: bool = False
    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def knows_process(self) -> bool:
        """Whether connection entries must keep their process: for records, or for per-process counts."""
        return self.records is not None or self.by_process

    @functools.cached_property
    def kernel_types(self) -> KernelTypes:
        return kernel_types(self.btf_source, needs=dict(self.kernel_needs))


Body = Callable[[Program, Arguments, BuildTarget], None]

#: Turns one record the probe sent (its bytes, the offset from the monotonic to the wall clock, and a
#: cgroup id -> container id resolver or None) into the event exporters print.
RecordDecoder = Callable[[bytes, float, Optional[Callable[[int], str]]], "ConnectionEvent"]


@dataclass(frozen=True)
class KernelWalk:
    """A walk in the kernel a probe offers: at each collection it reads what the probe's open connections
    did so far, in the kernel, instead of user space listing them. ProbeSet attaches it after the probe,
    and the probe's reader finds it as `ReadContext.walk` (None where user space reads instead).

    A walk that `shapes_build` needs the probe's programs built for it (BuildTarget.kernel_walk: state in
    socket storage); if it cannot attach, the whole set is attached again without it. Any other walk is
    tried on its own after the set, and a refusal only costs the faster path. Either way the fallback is
    logged, named in `gespann check`, and an error when the config insists (open_connections: kernel_walk).
    """

    #: What it reads, for logs and check: "open TCP connections".
    subject: str
    #: How user space reads them where the walk cannot run: "sock_diag".
    fallback: str
    #: The kernel release that brings what the walk needs, for the error when the config insists on it.
    since: str
    #: Attaches the walk for an attached probe (the build target, the settings, where to register what
    #: must be closed); returns the walk, or None when the probe's maps hold nothing to walk. Raises
    #: BPFError, BTFError or KeyError when the kernel cannot run it.
    attach: Callable[["AttachedProbe", BuildTarget, "ExitStack"], Any]
    #: Why the kernel cannot run it, without trying (BTF, fields, the iterator), given btf.source; None: nothing
    #: known rules it out.
    missing_prerequisite: Callable[[str], Optional[str]] = lambda source: None
    shapes_build: bool = False
    #: For a walk that shapes the build: the shared map whose every user must see sockets as BTF pointers.
    typed_sockets_for: Optional[str] = None


@dataclass(frozen=True)
class CheckContext:
    """What a probe's check line is written from: the settings `gespann run` would attach with, the probes
    it would attach, and what trying each of them here gave."""

    settings: "AttachSettings"
    probes: Sequence["Probe"]
    trials: Sequence["TrialResult"]


def walk_not_taken(context: CheckContext, fallback: str, unavailable_reason: Callable[[str], Optional[str]]
                   ) -> Optional[str]:
    """A walk's check line when user space reads instead, as the config asks or because the kernel cannot
    run the walk (`unavailable_reason(btf_source)`, tried for real); None when nothing rules the walk out."""
    if context.settings.open_connections == "user_space":
        return f"{fallback} (attach.open_connections: user_space)"
    why = unavailable_reason(context.settings.btf_source)
    return None if why is None else f"{fallback}: {why}"


@dataclass(frozen=True)
class CheckLine:
    """A line `gespann check` prints about a path the probe takes on this kernel, and why."""

    #: The key in `gespann check --json` and the line's title: ("open_connections", "open conns").
    key: str
    title: str
    #: The path taken, said from the kernel's own answers.
    describe: Callable[[CheckContext], str]
    #: What the line says when the probe is left out: "not read", "not counted".
    when_left_out: str = "not read"


@dataclass(frozen=True)
class Probe:
    """A probe point.

    `flavours` are the ways in, in order of preference. `body` writes the
    program after the context pointer has been saved in R6, reading the event's
    arguments through the `Arguments`; `derived` says how to get arguments a flavour
    lacks. `maps` names each map the program references and how to create it.
    `shared_maps` are created once per `ProbeSet` and handed to every probe that
    names them, so probes at different probe points can work on the same state
    (e.g. one marks a connection that another ends); a factory that takes a
    capacity gets the one the config sets for that map name (limits.*).

    `metrics` are what the probe contributes to the catalogue, and `reader` makes
    what turns its maps into their series at each collection (reading.py). A
    probe whose maps another probe reads (UDP's receiving probe fills the sending one's) declares
    neither. Two probes may declare one metric (the same spec), each adding its
    own series.
    """

    name: str
    summary: str
    flavours: tuple[Flavour, ...]
    body: Body
    derived: Derivations = field(default_factory=dict)
    maps: Mapping[str, Callable[[], Map]] = field(default_factory=dict)
    shared_maps: Mapping[str, Callable[..., Map]] = field(default_factory=dict)
    #: Maps of `maps` made only when this says the build target needs them (their code is built only then).
    optional_maps: Mapping[str, Callable[[BuildTarget], bool]] = field(default_factory=dict)
    #: The traffic it watches ("tcp" or "udp"): `scope.protocols` leaves out the probes of the others.
    #: None: packets of every protocol (dropped packets), attached whatever `scope.protocols` says.
    protocol: Optional[str] = "tcp"
    metrics: tuple[MetricSpec, ...] = ()
    #: A `reading.ReaderFactory`: called with a ReadContext, gives the probe's Reader.
    reader: Optional[Callable[..., object]] = None
    #: Given the build target, the decoder of the connection records this probe sends when the target
    #: carries a record channel; None: the probe sends none.
    records: Optional[Callable[[BuildTarget], RecordDecoder]] = None
    #: The kernel walk the probe offers for its open connections, if any.
    walk: Optional[KernelWalk] = None
    #: What `gespann check` says about the paths this probe takes.
    checks: tuple[CheckLine, ...] = ()
    #: Whether `gespann run` needs it. One that is not (its figures need a kernel feature some kernels lack)
    #: is left out where no flavour attaches, with a log line naming each flavour's reason, and its metrics
    #: are absent from the page; `gespann check` names it as left out, not as a reason not to run.
    required: bool = True
    #: Kernel fields, functions, tracepoints and enums the probe uses beyond gespann's manifest, resolved
    #: from the running kernel's BTF with it.
    kernel: KernelNeeds = NO_NEEDS
    #: Whether a config has gespann attach it at all (a probe that serves an opt-in feature only).
    wanted: Callable[[Any], bool] = lambda config: True

    def __post_init__(self):
        if self.metrics and self.reader is None:
            raise ValueError(f"probe {self.name} declares metrics but no reader for them")

    def watches(self, protocols: tuple[str, ...]) -> bool:
        """Whether `scope.protocols` keeps this probe."""
        return self.protocol is None or self.protocol in protocols

    def wants(self, map_name: str, target: BuildTarget) -> bool:
        """Whether a map of `maps` or `shared_maps` is made for this build target (optional_maps)."""
        wanted = self.optional_maps.get(map_name)
        return wanted is None or wanted(target)

    def flavour(self, mode: str) -> Flavour:
        for flavour in self.flavours:
            if flavour.mode == mode:
                return flavour
        raise KeyError(f"probe {self.name} has no {mode} flavour; it has {[f.mode for f in self.flavours]}")

    def program(self, flavour: Flavour, target: Optional[BuildTarget] = None) -> Program:
        """The program for `flavour`, as this kernel lays out the event and its types; without a target
        (`gespann disasm`), built alone, with the kernel names it declares."""
        if target is None:
            target = BuildTarget(kernel_needs=((self.name, self.kernel),) if self.kernel else ())
        p = Program(object_name(self.name))
        p.mov(R6, R1)
        args = flavour.arguments(R6, self.derived, lambda: target.kernel_types)
        args.scratch = p.frame.alloc("derived arguments", size=8)
        self.body(p, args, target)
        return p
