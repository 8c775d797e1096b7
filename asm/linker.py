"""Symbol resolution: label names become slot offsets, map names file descriptors.

Symbols let code name what it cannot number yet: a jump target further down,
a subprogram, a map whose fd only the loader knows. An offset counts 8-byte
slots from the slot after the instruction, as the kernel reads it.
"""
from __future__ import annotations

from typing import Callable, Mapping

from .errors import AsmError
from .instruction import Instruction, with_slots
from .opcodes import CallSrc, InsnClass, JmpOp, PseudoSrc

_MAP_SOURCES = (PseudoSrc.MAP_FD, PseudoSrc.MAP_VALUE)


def is_map_ref(insn: Instruction) -> bool:
    """A 64-bit load of a map named by `symbol`."""
    return insn.symbol is not None and insn.is_ld_imm64 and insn.src in _MAP_SOURCES


def _offset_field(insn: Instruction) -> str:
    """Where the offset to a label goes: `off` for jumps, `imm` for long jumps, local calls and function pointers."""
    if (
        insn.is_long_jump
        or (insn.is_call and insn.src == CallSrc.LOCAL)
        or (insn.is_ld_imm64 and insn.src == PseudoSrc.FUNC)
    ):
        return "imm"
    if insn.insn_class in (InsnClass.JMP, InsnClass.JMP32) and insn.op not in (JmpOp.CALL, JmpOp.EXIT):
        return "off"
    raise AsmError("this instruction cannot refer to a label")


def link(
    instructions: list[Instruction],
    labels: Mapping[str, int],
    maps: Mapping[str, int],
    where: Callable[[int, Instruction], str],
) -> list[Instruction]:
    """`instructions` with every symbol resolved; an error starts with `where(slot, insn)` of the culprit."""
    linked = []
    for slot, insn in with_slots(instructions):
        if insn.symbol is not None:
            try:
                insn = _resolve(insn, slot, labels, maps)
            except AsmError as error:
                raise AsmError(f"{where(slot, insn)}: {error}") from None
        linked.append(insn)
    return linked


def _resolve(insn: Instruction, slot: int, labels: Mapping[str, int], maps: Mapping[str, int]) -> Instruction:
    name = insn.symbol
    if is_map_ref(insn):
        if name not in maps:
            raise AsmError(f"map {name!r} has no file descriptor; given: {sorted(maps) or 'none'}")
        return insn.with_fields(imm=maps[name])
    field = _offset_field(insn)
    if name not in labels:
        raise AsmError(f"label {name!r} is not defined; defined: {sorted(labels) or 'none'}")
    return insn.with_fields(**{field: labels[name] - (slot + 1)})
