"""A probe: one probe point, its flavours, the maps its program writes, and the program's body.

A probe module (one per probe point, e.g. `tcp_states.py`) declares a `Probe`;
`ProbeSet` picks the first flavour the kernel accepts and attaches it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from asm import R1, R6, Program

from ..bpf.channel import RecordChannel
from ..bpf.maps import Map
from ..btf import KernelTypes, kernel_types
from ..figures import MetricSpec
from .arguments import Derivations, Arguments
from .flavours import Flavour


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
    #: Open connections are counted by the kernel walk (tcp_walk), which tcp_lifecycle must keep storage for.
    kernel_walk: bool = False

    @property
    def knows_process(self) -> bool:
        """Whether connection entries must keep their process: for records, or for per-process counts."""
        return self.records is not None or self.by_process

    @functools.cached_property
    def kernel_types(self) -> KernelTypes:
        return kernel_types(self.btf_source)


Body = Callable[[Program, Arguments, BuildTarget], None]


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
    probe whose maps another probe reads (udp_receive fills udp_send's) declares
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
    #: None: packets of every protocol (packet_drops), attached whatever `scope.protocols` says.
    protocol: Optional[str] = "tcp"
    metrics: tuple[MetricSpec, ...] = ()
    #: A `reading.ReaderFactory`: called with a ReadContext, gives the probe's Reader.
    reader: Optional[Callable[..., object]] = None

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

    def program(self, flavour: Flavour, target: BuildTarget = BuildTarget()) -> Program:
        """The program for `flavour`, as this kernel lays out the event and its types."""
        p = Program(f"gsp_{self.name}"[:15])
        p.mov(R6, R1)
        args = flavour.arguments(R6, self.derived, lambda: target.kernel_types)
        args.scratch = p.frame.alloc("derived arguments", size=8)
        self.body(p, args, target)
        return p
