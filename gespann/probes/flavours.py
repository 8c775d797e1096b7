"""Flavours: the different ways into one probe point, in gespann's order of preference.

Kernels differ in what they let a program attach to: this one has tracepoints
but no kprobes, another has kprobes but lacks a tracepoint. A probe lists
several flavours; each says what it needs, builds its `Event` (so the probe's
body reads the same named arguments whichever flavour runs), and attaches.

Order of preference, cheapest first:
  tp_btf          typed raw tracepoint (BTF, 5.5+): no record is formatted
  raw_tracepoint  raw tracepoint arguments (4.17+): no record is formatted
  tracepoint      the tracefs record through perf_event_open (4.7+)
  kprobe          a breakpoint on a kernel function (pt_regs): the slowest, but almost always there
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar, Mapping, Optional, Sequence

from ..bpf.links import AttachMode, Link, attach_raw_tracepoint, attach_tracepoint
from ..bpf.programs import LoadedProgram
from ..bpf.syscall import ProgType
from ..bpf.tracefs import read_format
from ..btf import KernelTypes
from .events import ArgumentArrayEvent, Derivations, Event, TracepointEvent

#: config `attach.tracepoint` -> the bpf layer's mode (None lets it choose).
TRACEPOINT_LINK_MODES: Mapping[str, Optional[AttachMode]] = {
    "auto": None,
    "link": AttachMode.LINK,
    "ioctl": AttachMode.PERF_IOCTL,
}


class Flavour(abc.ABC):
    """One way into a probe point."""

    mode: ClassVar[str]
    prog_type: ClassVar[ProgType]

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """What it attaches to, for people: `sock/inet_sock_set_state`, `tcp_connect`."""

    def __str__(self) -> str:
        return f"{self.mode}/{self.target}"

    @abc.abstractmethod
    def event(self, ctx, derived: Derivations, kernel_types: Callable[[], KernelTypes]) -> Event:
        """The event's arguments as this flavour's programs see them."""

    def load_options(self, kernel_types: Callable[[], KernelTypes]) -> dict:
        """Extra `load_program` arguments (attach_btf_id for BTF-typed flavours)."""
        return {"prog_type": self.prog_type}

    @abc.abstractmethod
    def attach(self, program: LoadedProgram, tracepoint_link: str = "auto") -> Link: ...


class Tracepoint(Flavour):
    """`category:event` through perf_event_open; `fields` maps argument names to record fields."""

    mode, prog_type = "tracepoint", ProgType.TRACEPOINT

    def __init__(self, category: str, name: str, fields: Mapping[str, str]):
        self.category, self.name, self.fields = category, name, dict(fields)

    @property
    def target(self) -> str:
        return f"{self.category}/{self.name}"

    def event(self, ctx, derived, kernel_types) -> Event:
        return TracepointEvent(read_format(self.category, self.name), self.fields, ctx, derived, kernel_types)

    def attach(self, program, tracepoint_link="auto") -> Link:
        return attach_tracepoint(program, self.category, self.name, mode=TRACEPOINT_LINK_MODES[tracepoint_link])


class RawTracepoint(Flavour):
    """The tracepoint's raw arguments, `args` in its TP_PROTO order."""

    mode, prog_type = "raw_tracepoint", ProgType.RAW_TRACEPOINT

    def __init__(self, name: str, args: Sequence[str]):
        self.name, self.args = name, tuple(args)

    @property
    def target(self) -> str:
        return self.name

    def event(self, ctx, derived, kernel_types) -> Event:
        return ArgumentArrayEvent(self.args, ctx, derived, kernel_types)

    def attach(self, program, tracepoint_link="auto") -> Link:
        return attach_raw_tracepoint(program, self.name)


#: Every mode, in order of preference.
MODES: tuple[str, ...] = ("tp_btf", "raw_tracepoint", "tracepoint", "kprobe")
