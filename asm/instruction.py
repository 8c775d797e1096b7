"""One eBPF instruction as an immutable value, and its 8-byte wire format.

The wire format is little-endian: opcode (u8), dst and src registers packed in
one byte (dst in the low nibble), off (s16), imm (s32). The 64-bit immediate
load spans two slots; the second slot carries only the upper immediate, kept
here as `next_imm` so that one `Instruction` is always one logical operation.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Iterator, Optional

from .errors import AsmError
from .opcodes import CLASS_MASK, LD_IMM64, OP_MASK, SLOT_SIZE, InsnClass, JmpOp

_SLOT = struct.Struct("<BBhi")

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)
_FIELD_BOUNDS = {"opcode": (0, 0xFF), "dst": (0, 15), "src": (0, 15), "off": S16, "imm": S32, "next_imm": S32}


def fits(value: int, bounds: tuple[int, int]) -> bool:
    low, high = bounds
    return low <= value <= high


def to_s32(value: int) -> int:
    """Reinterpret the low 32 bits of `value` as a signed number."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True)
class Instruction:
    """An instruction with numeric fields, or with a `symbol` still to resolve.

    `symbol` names a label (for jumps, local calls and function pointers) or a
    map (for map loads); the linker replaces it by the number it stands for.
    Encoding an instruction whose symbol is unresolved is an error.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    next_imm: int = 0
    symbol: Optional[str] = None

    def __post_init__(self) -> None:
        problems = [
            f"{name} {getattr(self, name)!r} is not an int in [{low}, {high}]"
            for name, (low, high) in _FIELD_BOUNDS.items()
            if not (isinstance(getattr(self, name), int) and fits(getattr(self, name), (low, high)))
        ]
        if self.next_imm and self.opcode != LD_IMM64:
            problems.append("only the 64-bit immediate load has a next_imm")
        if problems:
            opcode = hex(self.opcode) if isinstance(self.opcode, int) else repr(self.opcode)
            raise AsmError(f"Instruction(opcode={opcode}): {'; '.join(problems)}")
        for name in _FIELD_BOUNDS:  # plain ints, whether given as enums or decoded
            object.__setattr__(self, name, int(getattr(self, name)))

    def __repr__(self) -> str:
        fields = [f"opcode={self.opcode:#04x}"]
        fields += [f"{name}={getattr(self, name)}" for name in tuple(_FIELD_BOUNDS)[1:] if getattr(self, name)]
        if self.symbol is not None:
            fields.append(f"symbol={self.symbol!r}")
        return f"Instruction({', '.join(fields)})"

    @property
    def insn_class(self) -> InsnClass:
        return InsnClass(self.opcode & CLASS_MASK)

    @property
    def op(self) -> int:
        """The ALU or JMP operation (high nibble); meaningless for loads and stores."""
        return self.opcode & OP_MASK

    @property
    def is_ld_imm64(self) -> bool:
        return self.opcode == LD_IMM64

    @property
    def is_call(self) -> bool:
        return self.insn_class == InsnClass.JMP and self.op == JmpOp.CALL

    @property
    def is_long_jump(self) -> bool:
        """`gotol`: JMP32|JA, whose target offset lives in imm rather than off."""
        return self.opcode == InsnClass.JMP32 | JmpOp.JA

    @property
    def slots(self) -> int:
        """How many 8-byte slots the instruction takes."""
        return 2 if self.is_ld_imm64 else 1

    @property
    def value64(self) -> int:
        """The unsigned 64-bit immediate of a 64-bit load."""
        return (self.next_imm & 0xFFFFFFFF) << 32 | (self.imm & 0xFFFFFFFF)

    def with_fields(self, **fields: int) -> Instruction:
        """A copy with some numeric fields replaced and the symbol resolved."""
        return replace(self, symbol=None, **fields)

    def encode(self) -> bytes:
        if self.symbol is not None:
            raise AsmError(f"{self!r}: unresolved symbol {self.symbol!r}")
        first = _SLOT.pack(self.opcode, self.src << 4 | self.dst, self.off, self.imm)
        if not self.is_ld_imm64:
            return first
        return first + _SLOT.pack(0, 0, 0, self.next_imm)


def encode(instructions: list[Instruction]) -> bytes:
    """Bytecode for a sequence of instructions."""
    return b"".join(insn.encode() for insn in instructions)


def with_slots(instructions: list[Instruction]) -> Iterator[tuple[int, Instruction]]:
    """Each instruction with the index of its first slot, the number jumps and the verifier count in."""
    slot = 0
    for insn in instructions:
        yield slot, insn
        slot += insn.slots


def decode(code: bytes) -> list[Instruction]:
    """Instructions from bytecode; a 64-bit load consumes two slots."""
    if len(code) % SLOT_SIZE:
        raise AsmError(f"bytecode length {len(code)} is not a multiple of {SLOT_SIZE}")
    slots = list(_SLOT.iter_unpack(code))
    instructions = []
    index = 0
    while index < len(slots):
        opcode, regs, off, imm = slots[index]
        next_imm = 0
        if opcode == LD_IMM64:
            if index + 1 == len(slots):
                raise AsmError(f"slot {index}: 64-bit immediate load is missing its second slot")
            next_imm = slots[index + 1][3]
        instructions.append(Instruction(opcode, regs & 0x0F, regs >> 4, off, imm, next_imm))
        index += 2 if opcode == LD_IMM64 else 1
    return instructions
