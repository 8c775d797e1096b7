"""The numbers of the eBPF instruction set (RFC 9669), named once.

An opcode byte is split three ways: the low three bits are the class; for
arithmetic and jumps the next bit is the source (immediate or register) and
the high nibble the operation; for loads and stores the next two bits are the
access size and the high three bits the mode.
"""
from __future__ import annotations

from enum import IntEnum


class InsnClass(IntEnum):
    """Low three bits of the opcode."""

    LD = 0x00
    LDX = 0x01
    ST = 0x02
    STX = 0x03
    ALU = 0x04
    JMP = 0x05
    JMP32 = 0x06
    ALU64 = 0x07


CLASS_MASK = 0x07


class Source(IntEnum):
    """Bit 3 of arithmetic and jump opcodes: use `imm` (K) or `src` (X)."""

    K = 0x00
    X = 0x08


class Size(IntEnum):
    """Bits 3-4 of load and store opcodes: how many bytes are accessed."""

    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18

    def __repr__(self) -> str:
        return self.name

    @property
    def bytes(self) -> int:
        return {Size.B: 1, Size.H: 2, Size.W: 4, Size.DW: 8}[self]

    @property
    def bits(self) -> int:
        return self.bytes * 8


class Mode(IntEnum):
    """Bits 5-7 of load and store opcodes: how the address is formed."""

    IMM = 0x00  # only the 64-bit immediate load
    ABS = 0x20  # legacy packet access, address in imm
    IND = 0x40  # legacy packet access, address in src + imm
    MEM = 0x60
    MEMSX = 0x80  # sign-extending load
    ATOMIC = 0xC0


class AluOp(IntEnum):
    """High nibble of ALU and ALU64 opcodes."""

    ADD = 0x00
    SUB = 0x10
    MUL = 0x20
    DIV = 0x30  # SDIV when off == 1
    OR = 0x40
    AND = 0x50
    LSH = 0x60
    RSH = 0x70
    NEG = 0x80
    MOD = 0x90  # SMOD when off == 1
    XOR = 0xA0
    MOV = 0xB0  # MOVSX when off is 8, 16 or 32
    ARSH = 0xC0
    END = 0xD0  # byte swap; the width is in imm


class JmpOp(IntEnum):
    """High nibble of JMP and JMP32 opcodes."""

    JA = 0x00
    JEQ = 0x10
    JGT = 0x20
    JGE = 0x30
    JSET = 0x40
    JNE = 0x50
    JSGT = 0x60
    JSGE = 0x70
    CALL = 0x80
    EXIT = 0x90
    JLT = 0xA0
    JLE = 0xB0
    JSLT = 0xC0
    JSLE = 0xD0


OP_MASK = 0xF0

SIGNED_OFF = 1
"""The `off` value that turns DIV into SDIV and MOD into SMOD."""

MOVSX_WIDTHS = (8, 16, 32)
"""The `off` values of MOVSX: how many low bits are sign-extended."""

SWAP_WIDTHS = (16, 32, 64)
"""The `imm` values of a byte swap."""


class ByteOrder(IntEnum):
    """Source bit of an ALU-class END: convert to little or big endian.

    In the ALU64 class the same bit pattern (K) means an unconditional swap.
    """

    LE = 0x00
    BE = 0x08


class AtomicOp(IntEnum):
    """The `imm` of an atomic store: an ALU operation, optionally with FETCH."""

    ADD = AluOp.ADD
    OR = AluOp.OR
    AND = AluOp.AND
    XOR = AluOp.XOR
    XCHG = 0xE0 | 0x01
    CMPXCHG = 0xF0 | 0x01


FETCH = 0x01
"""Flag in an atomic `imm`: the old memory value is returned in `src`."""


class PseudoSrc(IntEnum):
    """The `src` field of a 64-bit immediate load: what the immediate means."""

    IMM64 = 0  # a plain 64-bit number
    MAP_FD = 1  # imm is a map file descriptor
    MAP_VALUE = 2  # imm is a map fd, next_imm an offset into its value
    BTF_ID = 3  # imm is a BTF id of a kernel variable
    FUNC = 4  # imm is the relative offset of a subprogram
    MAP_IDX = 5  # imm is an index into the fd array passed at load time
    MAP_IDX_VALUE = 6  # like MAP_IDX, next_imm an offset into its value


class CallSrc(IntEnum):
    """The `src` field of a call: what `imm` identifies."""

    HELPER = 0  # imm is a helper id
    LOCAL = 1  # imm is the relative offset of a subprogram (BPF-to-BPF call)
    KFUNC = 2  # imm is the BTF id of a kernel function


LD_IMM64 = InsnClass.LD | Size.DW | Mode.IMM
"""The only opcode that takes two 8-byte slots."""

SLOT_SIZE = 8
"""Every instruction slot is eight bytes; jump offsets count slots."""
