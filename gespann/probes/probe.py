"""A probe: one kernel event, the maps its program writes, and how to build that program.

A probe module (one per probe point, e.g. `tcp_states.py`) declares a `Probe`;
`ProbeSet` turns the declarations into loaded, attached programs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from asm import Program

from ..bpf.maps import Map
from ..bpf.tracefs import TracepointFormat, read_format
from ..btf import KernelTypes, kernel_types


@dataclass(frozen=True)
class BuildTarget:
    """What a program is built for: this kernel's record layout and types, and the scope to watch.

    Kernel types are resolved on first use, so a probe that needs no struct
    offsets never pays for BTF.
    """

    tracepoint: TracepointFormat
    btf_source: str = "auto"
    #: Only sockets in this network namespace (its inode number) are seen; None sees all.
    netns: Optional[int] = None

    @functools.cached_property
    def kernel_types(self) -> KernelTypes:
        return kernel_types(self.btf_source)


@dataclass(frozen=True)
class Probe:
    """A program on the tracepoint `category:event`.

    `maps` names each map the program references and how to create it; `build`
    writes the program for a `BuildTarget`.
    """

    name: str
    summary: str
    category: str
    event: str
    build: Callable[[BuildTarget], Program]
    maps: Mapping[str, Callable[[], Map]] = field(default_factory=dict)

    @property
    def attach_point(self) -> str:
        return f"tracepoint/{self.category}/{self.event}"

    def program(self, btf_source: str = "auto", netns: Optional[int] = None) -> Program:
        """The program as this kernel lays out the event and its types."""
        return self.build(BuildTarget(read_format(self.category, self.event), btf_source, netns))
