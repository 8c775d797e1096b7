"""Flavours: the different ways into one probe point, in gespann's order of preference.

Kernels differ in what they let a program attach to: this one has tracepoints
but no kprobes, another has kprobes but lacks a tracepoint. A probe lists
several flavours; each says what it attaches to, builds its `Arguments` (so the
probe's body reads the same named arguments whichever flavour runs), and
attaches. A flavour may need several attachments (a kprobe on each of the
functions that fire one tracepoint); the program is loaded once per target.

Order of preference, cheapest first:
  fentry          a BPF trampoline on a kernel function (BTF, 5.5+)
  tp_btf          typed raw tracepoint (BTF, 5.5+): no record is formatted
  raw_tracepoint  raw tracepoint arguments (4.17+): no record is formatted
  tracepoint      the tracefs record through perf_event_open (4.7+)
  kprobe          a breakpoint on a kernel function (pt_regs): the slowest, but almost always there
"""

from __future__ import annotations

import abc
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
    ArrayArguments,
    Derivations,
    Arguments,
    RegisterArguments,
    TracepointArguments,
    as_args,
)

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
    #: The event's pointer arguments are BTF-typed (see Arguments.btf_pointers).
    btf_pointers: ClassVar[bool] = False

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
    btf_pointers = True

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
    btf_pointers = True

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


#: Every mode, in order of preference.
MODES: tuple[str, ...] = ("fentry", "tp_btf", "raw_tracepoint", "tracepoint", "kprobe")
