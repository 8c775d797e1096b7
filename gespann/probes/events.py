"""A kernel event's arguments by name, whichever way the program was attached.

A probe's body asks for `sk` or `newstate` and does not care whether they sit
in a tracepoint record, in the u64 argument array of a raw tracepoint, tp_btf
or fentry program, or in the pt_regs of a kprobe. An argument the attach point
does not carry is derived from one it does, by reading a kernel struct field
(e.g. `protocol` as `sk->sk_protocol`).
"""

from __future__ import annotations

import abc
from typing import Callable, Mapping, Sequence

from asm import DW, Program, Register

from ..bpf.tracefs import TracepointFormat, emit_load_field
from ..btf import KernelTypes
from .kernel_memory import emit_read_field

#: name -> (pointer argument, manifest field): how to derive an argument the event lacks.
Derivations = Mapping[str, "tuple[str, str]"]

#: The 8-byte stack slot derived loads use; probe bodies leave it free.
SCRATCH_SLOT = -8


class Event(abc.ABC):
    """The arguments of one event; the program's context pointer is kept in `ctx` (R6 by convention)."""

    def __init__(self, ctx: Register, derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        self.ctx = ctx
        self._derived = derived
        self._kernel_types = kernel_types

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
        pointer, field = self._derived[name]
        self.load(p, dst, pointer)
        emit_read_field(p, dst, dst, self._kernel_types().field(field), SCRATCH_SLOT)


class TracepointEvent(Event):
    """Arguments are fields of the tracefs record, at this kernel's offsets."""

    def __init__(self, fmt: TracepointFormat, fields: Mapping[str, str], ctx: Register,
                 derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        super().__init__(ctx, derived, kernel_types)
        self.format, self.fields = fmt, fields

    def native(self) -> Sequence[str]:
        return tuple(self.fields)

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        emit_load_field(p, self.format, dst, self.ctx, self.fields[name])


class ArgumentArrayEvent(Event):
    """Arguments are u64 slots of the context, in the traced function's order
    (raw tracepoints, tp_btf, fentry/fexit)."""

    def __init__(self, args: Sequence[str], ctx: Register, derived: Derivations,
                 kernel_types: Callable[[], KernelTypes]):
        super().__init__(ctx, derived, kernel_types)
        self.args = tuple(args)

    def native(self) -> Sequence[str]:
        return self.args

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        p.ldx(DW, dst, self.ctx, 8 * self.args.index(name))


class RegisterEvent(Event):
    """Arguments are saved registers in the kprobe's pt_regs, at the ABI's argument offsets."""

    def __init__(self, args: Sequence[str], register_offsets: Sequence[int], ctx: Register,
                 derived: Derivations, kernel_types: Callable[[], KernelTypes]):
        super().__init__(ctx, derived, kernel_types)
        if len(args) > len(register_offsets):
            raise ValueError(f"{len(args)} arguments, but only {len(register_offsets)} pass in registers")
        self.offsets = dict(zip(args, register_offsets))

    def native(self) -> Sequence[str]:
        return tuple(self.offsets)

    def _load_native(self, p: Program, dst: Register, name: str) -> None:
        p.ldx(DW, dst, self.ctx, self.offsets[name])
