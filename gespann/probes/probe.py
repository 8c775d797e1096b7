"""A probe: one kernel event, the maps its program writes, and how to build that program.

A probe module (one per probe point, e.g. `tcp_states.py`) declares a `Probe`;
`ProbeSet` turns the declarations into loaded, attached programs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from asm import Program

from ..bpf.maps import Map
from ..bpf.tracefs import TracepointFormat, read_format


@dataclass(frozen=True)
class Probe:
    """A program on the tracepoint `category:event`.

    `maps` names each map the program references and how to create it; `build`
    writes the program for this kernel's record layout.
    """

    name: str
    summary: str
    category: str
    event: str
    build: Callable[[TracepointFormat], Program]
    maps: Mapping[str, Callable[[], Map]] = field(default_factory=dict)

    @property
    def attach_point(self) -> str:
        return f"tracepoint/{self.category}/{self.event}"

    def tracepoint_format(self) -> TracepointFormat:
        return read_format(self.category, self.event)

    def program(self) -> Program:
        """The program as this kernel's tracefs lays out the event."""
        return self.build(self.tracepoint_format())
