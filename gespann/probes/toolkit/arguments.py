"""A kernel event's arguments by name, whichever way the program was attached.

A probe's body asks for `sk` or `newstate` and does not care whether they sit
in a tracepoint record, in the u64 argument array of a raw tracepoint, tp_btf
or fentry program, or in the pt_regs of a kprobe. An argument the attach point
does not carry is derived from one it does, by reading a kernel struct field
(e.g. `protocol` as `sk->sk_protocol`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Optional, Union

from asm import DW, Program, Register, Size, Slot

from ...bpf.errors import BPFError
from ...bpf.pt_regs import PT_REGS, PtRegsLayout
from ...bpf.tracefs import TracepointFormat
from ...btf import KernelTypes
from .kernel_memory import emit_read_field

#: name -> (pointer argument, manifest field): how to derive an argument the event lacks.
Derivations = Mapping[str, "tuple[str, str]"]


class Arg(NamedTuple):
    """An argument in a u64 slot (raw tracepoint, tp_btf, fentry) or a register (kprobe), and the C
    integer type it has there.

    Only the low `size` bytes of a narrower argument are defined: 5.10's BPF
    trampoline stores an `int` argument's 4 bytes into its 8-byte slot and
    leaves the upper half as stale stack, and the x86-64 ABI leaves the upper
    half of an int's register unspecified. A narrow argument is therefore
    extended from its low bytes on load, as C would convert it.
    """

    name: str
    size: int = 8  # bytes: pointers and longs take the whole slot
    signed: bool = False

    @classmethod
    def c_int(cls, name: str) -> Arg:
        """A C `int`."""
        return cls(name, 4, signed=True)


ArgSpec = Union[str, Arg]  # a bare name is a whole slot: a pointer or a long


def as_args(specs: Sequence[ArgSpec]) -> tuple[Arg, ...]:
    args = tuple(spec if isinstance(spec, Arg) else Arg(spec) for spec in specs)
    for arg in args:
        if arg.size not in (1, 2, 4, 8):
            raise ValueError(f"argument {arg.name!r} is {arg.size} bytes: not an integer or pointer size")
    return args


def emit_extend(p: Program, dst: Register, arg: Arg) -> None:
    """Emit `dst = (s64 or u64)(the low arg.size bytes of dst)`; nothing for a whole slot."""
    if arg.size == 8:
        return
    shift = 64 - 8 * arg.size
    p.lsh(dst, shift)
    if arg.signed:
        p.arsh(dst, shift)
    else:
        p.rsh(dst, shift)


class Arguments(abc.ABC):
    """The arguments of one event; the program's context pointer is kept in `ctx` (R6 by convention).

    `scratch` is the 8-byte stack slot derived arguments are read through (`Probe.program` allocates it
    before the body's own slots).
    """

    #: The pointer arguments are BTF-typed (tp_btf, fentry): a probe may read their struct fields,
    #: and those of struct pointers it loaded from them, with direct loads, much cheaper than
    #: bpf_probe_read_kernel (`emit_read_field(..., direct=event.btf_pointers)`). Elsewhere they
    #: are plain integers to the verifier.
    btf_pointers: bool = False

    def __init__(self, ctx: Register, derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        self.ctx = ctx
        self._derived = derived
        self._kernel_types = kernel_types
        self.scratch: Optional[Slot] = None

    @abc.abstractmethod
    def native(self) -> Sequence[str]:
        """The arguments this attach point carries itself."""

    @abc.abstractmethod
    def _load_native(self, p: Program, dst: Register, name: str) -> None: ...

    def load(self, p: Program, dst: Register, name: str) -> None:
        """Emit `dst = name`. A native argument costs one load and clobbers nothing else;
        a derived one reads kernel memory and clobbers R0-R5."""
        if name in self.native():
            self._load_native(p, dst, name)
            return
        if name not in self._derived:
            raise KeyError(f"event has no argument {name!r}; it has {sorted({*self.native(), *self._derived})}")
        if self.scratch is None:
            raise ValueError(f"argument {name!r} is read from kernel memory: the event needs a scratch slot")
        pointer, field = self._derived[name]
        self.load(p, dst, pointer)
        emit_read_field(p, dst, dst, self._kernel_types().field(field), self.scratch, direct=self.btf_pointers)


class TracepointArguments(Arguments):
    """Arguments are fields of the tracefs record, at this kernel's offsets."""

    def __init__(self, fmt: TracepointFormat, fields: Mapping[str, str], ctx: Register,
                 derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        super().__init__(ctx, derived, kernel_types)
        self.format, self.fields = fmt, fields

    def native(self) -> Sequence[str]:
        return tuple(self.fields)

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        emit_load_field(p, self.format, dst, self.ctx, self.fields[name])


class ArrayArguments(Arguments):
    """Arguments are u64 slots of the context, in the traced function's order
    (raw tracepoints, tp_btf, fentry/fexit); `btf_pointers` for tp_btf and fentry."""

    def __init__(self, args: Sequence[ArgSpec], ctx: Register, derived: Derivations,
                 kernel_types: Callable[[], KernelTypes], btf_pointers: bool = False):
        super().__init__(ctx, derived, kernel_types)
        self.btf_pointers = btf_pointers
        self.args = {arg.name: (8 * slot, arg) for slot, arg in enumerate(as_args(args))}

    def native(self) -> Sequence[str]:
        return tuple(self.args)

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        offset, arg = self.args[name]
        p.ldx(DW, dst, self.ctx, offset)
        emit_extend(p, dst, arg)


class RegisterArguments(Arguments):
    """Arguments are saved registers in the kprobe's pt_regs, at the ABI's argument offsets."""

    def __init__(self, args: Sequence[ArgSpec], register_offsets: Sequence[int], ctx: Register,
                 derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        super().__init__(ctx, derived, kernel_types)
        args = as_args(args)
        if len(args) > len(register_offsets):
            raise ValueError(f"{len(args)} arguments, but only {len(register_offsets)} pass in registers")
        self.args = {arg.name: (offset, arg) for arg, offset in zip(args, register_offsets)}

    def native(self) -> Sequence[str]:
        return tuple(self.args)

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        offset, arg = self.args[name]
        p.ldx(DW, dst, self.ctx, offset)
        emit_extend(p, dst, arg)


_LOAD_SIZES = {1: Size.B, 2: Size.H, 4: Size.W, 8: Size.DW}


def emit_load_field(p: Program, fmt: TracepointFormat, dst: Register, ctx: Register, name: str) -> None:
    """Emit `dst = ctx->name` (zero-extended) at the offset and width this kernel gives the field.

    A field of up to 8 bytes loads whole, arrays too: `__u8 saddr[4]` loads as one u32,
    in memory order.
    """
    field = fmt.field(name)
    if field.size not in _LOAD_SIZES:
        raise BPFError(f"{fmt.category}:{fmt.name} field {name!r} is {field.size} bytes: too wide for one load")
    p.ldx(_LOAD_SIZES[field.size], dst, ctx, field.offset)


def emit_load_arg(p: Program, dst: Register, ctx: Register, n: int, layout: Optional[PtRegsLayout] = None) -> None:
    """Emit `dst = argument n` of the probed function, from the kprobe's context at `ctx`."""
    p.ldx(DW, dst, ctx, (layout or PT_REGS).arg(n))


def emit_load_return(p: Program, dst: Register, ctx: Register, layout: Optional[PtRegsLayout] = None) -> None:
    """Emit `dst = the return value`, in a kretprobe."""
    p.ldx(DW, dst, ctx, (layout or PT_REGS).ret)
