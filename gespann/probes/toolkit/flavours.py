"""Flavours: the different ways into one probe point, and the table of attach modes they come in.

Kernels differ in what they let a program attach to: this one has tracepoints
but no kprobes, another has kprobes but lacks a tracepoint. A probe lists
several flavours; each says what it attaches to, builds its `Arguments` (so the
probe's body reads the same named arguments whichever flavour runs), and
attaches. A flavour may need several attachments (a kprobe on each of the
functions that fire one tracepoint); the program is loaded once per target.

`ATTACH_MODES` is the one table of modes: the config's choices, the guide's
order of preference and the attach-flavour reference in docs/ come from it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping, Optional, Sequence

from ...bpf.links import (
    AttachMode,
    Link,
    attach_fentry,
    attach_kprobe,
    attach_raw_tracepoint,
    attach_tp_btf,
    attach_tracepoint,
)
from ...bpf.programs import LoadedProgram
from ...bpf.pt_regs import PT_REGS
from ...bpf.syscall import AttachType, ProgType
from ...bpf.tracefs import read_format
from ...btf import KernelTypes
from .arguments import (
    ArgSpec,
    Arguments,
    ArrayArguments,
    Derivations,
    RegisterArguments,
    TracepointArguments,
    as_args,
)


@dataclass(frozen=True)
class AttachModeInfo:
    """One attach mode, as the config names it and the docs describe it."""

    name: str
    description: str
    #: What the kernel must offer, asked of it by `gespann check` (never read from the version).
    needs: str
    #: The Linux release the mode first appeared in.
    since: str
    #: Whether the event's socket and packet arguments are BTF-typed pointers (read with direct loads).
    btf_pointers: bool


#: Every attach mode, in gespann's order of preference: each probe lists its flavours in this order, and
#: `auto` takes the first the kernel accepts. Tracepoints come first because their arguments are a stable
#: interface; fentry and kprobe hook kernel functions, whose names and arguments change between releases.
ATTACH_MODES: tuple[AttachModeInfo, ...] = (
    AttachModeInfo("tp_btf", "typed raw tracepoint: the arguments as the kernel passes them, no record formatted",
                   "kernel BTF, BPF_PROG_TYPE_TRACING", "5.5", btf_pointers=True),
    AttachModeInfo("raw_tracepoint", "raw tracepoint arguments, no record formatted",
                   "BPF_RAW_TRACEPOINT_OPEN", "4.17", btf_pointers=False),
    AttachModeInfo("tracepoint", "the tracefs record, through perf_event_open",
                   "perf_event_open on a tracefs event; bpf_link from 5.15, else the ioctl", "4.7",
                   btf_pointers=False),
    AttachModeInfo("fentry", "a BPF trampoline on a kernel function",
                   "BTF and BPF trampolines", "5.5", btf_pointers=True),
    AttachModeInfo("kprobe", "a breakpoint on a kernel function (pt_regs): the slowest, but almost always there",
                   "the kprobe PMU (4.17), else tracefs `kprobe_events`", "4.1", btf_pointers=False),
)
#: The modes' names, in order of preference.
MODES: tuple[str, ...] = tuple(mode.name for mode in ATTACH_MODES)
_MODE_INFO = {mode.name: mode for mode in ATTACH_MODES}

#: config `attach.tracepoint` -> the bpf layer's mode for perf-event attachments (None lets it choose).
PERF_EVENT_LINK_MODES: Mapping[str, Optional[AttachMode]] = {
    "auto": None,
    "link": AttachMode.LINK,
    "ioctl": AttachMode.PERF_IOCTL,
}

KernelTypesSource = Callable[[], KernelTypes]


class Flavour(abc.ABC):
    """One way into a probe point: `targets` to attach to, all delivering the same event."""

    mode: ClassVar[str]
    prog_type: ClassVar[ProgType]
    #: The event's pointer arguments are BTF-typed (see Arguments.btf_pointers): the mode's, from ATTACH_MODES.
    btf_pointers: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("mode") in _MODE_INFO:
            cls.btf_pointers = _MODE_INFO[cls.mode].btf_pointers

    def __init__(self, targets: Sequence[str]):
        self.targets = tuple(targets)

    def __str__(self) -> str:
        return f"{self.mode}/{'+'.join(self.targets)}"

    @abc.abstractmethod
    def arguments(self, ctx, derived: Derivations, kernel_types: KernelTypesSource) -> Arguments:
        """The event's arguments as this flavour's programs see them."""

    def load_options(self, target: str, kernel_types: KernelTypesSource) -> dict:
        """`load_program` arguments for the program attached to `target`."""
        return {"prog_type": self.prog_type}

    @abc.abstractmethod
    def attach(self, program: LoadedProgram, target: str, perf_event_link: str = "auto") -> Link: ...


class Tracepoint(Flavour):
    """`category:name` through perf_event_open; `fields` maps argument names to record fields."""

    mode, prog_type = "tracepoint", ProgType.TRACEPOINT

    def __init__(self, category: str, name: str, fields: Mapping[str, str]):
        super().__init__((f"{category}/{name}",))
        self.category, self.name, self.fields = category, name, dict(fields)

    def arguments(self, ctx, derived, kernel_types) -> Arguments:
        return TracepointArguments(read_format(self.category, self.name), self.fields, ctx, derived, kernel_types)

    def attach(self, program, target, perf_event_link="auto") -> Link:
        return attach_tracepoint(program, self.category, self.name, mode=PERF_EVENT_LINK_MODES[perf_event_link])


class _ArgumentArrayFlavour(Flavour):
    """Flavours whose context is the arguments as u64 slots, `args` in the kernel's order
    (an `Arg` for an integer narrower than the slot)."""

    def __init__(self, targets: Sequence[str], args: Sequence[ArgSpec]):
        super().__init__(targets)
        self.args = as_args(args)

    def arguments(self, ctx, derived, kernel_types) -> Arguments:
        return ArrayArguments(self.args, ctx, derived, kernel_types, btf_pointers=self.btf_pointers)


class RawTracepoint(_ArgumentArrayFlavour):
    """The tracepoint's raw arguments, in its TP_PROTO order."""

    mode, prog_type = "raw_tracepoint", ProgType.RAW_TRACEPOINT

    def __init__(self, name: str, args: Sequence[ArgSpec]):
        super().__init__((name,), args)

    def attach(self, program, target, perf_event_link="auto") -> Link:
        return attach_raw_tracepoint(program, target)


class BtfTracepoint(_ArgumentArrayFlavour):
    """tp_btf: the raw arguments, typed by the kernel's `btf_trace_<name>` (needs kernel BTF)."""

    mode, prog_type = "tp_btf", ProgType.TRACING

    def __init__(self, name: str, args: Sequence[ArgSpec]):
        super().__init__((name,), args)

    def load_options(self, target, kernel_types) -> dict:
        return {"prog_type": self.prog_type, "expected_attach_type": AttachType.TRACE_RAW_TP,
                "attach_btf_id": kernel_types().tracepoint_id(target)}

    def attach(self, program, target, perf_event_link="auto") -> Link:
        return attach_tp_btf(program)


class Fentry(_ArgumentArrayFlavour):
    """fentry on each of `functions`, whose arguments are `args` (needs kernel BTF and trampolines)."""

    mode, prog_type = "fentry", ProgType.TRACING

    def __init__(self, functions: Sequence[str], args: Sequence[ArgSpec]):
        super().__init__(functions, args)

    def load_options(self, target, kernel_types) -> dict:
        return {"prog_type": self.prog_type, "expected_attach_type": AttachType.TRACE_FENTRY,
                "attach_btf_id": kernel_types().func(target).btf_id}

    def attach(self, program, target, perf_event_link="auto") -> Link:
        return attach_fentry(program)


class Kprobe(Flavour):
    """A kprobe on each of `functions`; `args` name the leading arguments, read from pt_regs."""

    mode, prog_type = "kprobe", ProgType.KPROBE

    def __init__(self, functions: Sequence[str], args: Sequence[ArgSpec]):
        super().__init__(functions)
        self.args = as_args(args)

    def arguments(self, ctx, derived, kernel_types) -> Arguments:
        return RegisterArguments(self.args, PT_REGS.args, ctx, derived, kernel_types)

    def attach(self, program, target, perf_event_link="auto") -> Link:
        return attach_kprobe(program, target, mode=PERF_EVENT_LINK_MODES[perf_event_link])


def event_fields(category: str, name: str) -> frozenset[str]:
    """The fields of tracepoint `category:name`'s record on the running kernel, from its tracefs format: which
    of an event's arguments this kernel passes, for events that gained some over releases (the raw arguments
    follow the record's fields). BPFError naming tracefs where it cannot be read."""
    return frozenset(field.name for field in read_format(category, name).fields)
