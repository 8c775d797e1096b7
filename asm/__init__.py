"""A standalone eBPF assembler: Python DSL, LLVM-syntax text, and bytecode. It never touches the kernel.

    p = Program("count")              # the DSL, one method per instruction
    key = p.frame.alloc("key", size=4)  # stack slots from the program's frame
    p.st(W, R10, key.at(), 0)
    p.ld_map(R1, "counts")            # maps and jump targets by name
    out = p.new_label("out")          # a name no other code in the program uses
    p.jeq(R0, 0, out)
    p.label(out)
    p.exit()
    code = p.assemble(maps={"counts": fd})

`assemble(text)` and `disassemble(code)` speak the syntax of llvm-mc and
llvm-objdump; `Record` lays out a C struct once for the program's stores and
userspace's decoding, and the `Frame` of a program places it on the stack.
"""
from .errors import AsmError
from .frame import STACK_LIMIT, Frame, Slot
from .helpers import HELPERS, helper_id
from .instruction import Instruction, decode, encode
from .opcodes import Size
from .program import Program
from .record import Array, Field, Record, Scalar, array, s8, s16, s32, s64, u8, u16, u32, u64
from .registers import R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, Register
from .text import assemble, disassemble, format_dsl, format_instruction, parse_instruction

B, H, W, DW = Size.B, Size.H, Size.W, Size.DW

__all__ = [
    "AsmError",
    "Frame",
    "Slot",
    "STACK_LIMIT",
    "HELPERS",
    "helper_id",
    "Instruction",
    "decode",
    "encode",
    "Size",
    "B",
    "H",
    "W",
    "DW",
    "Program",
    "assemble",
    "disassemble",
    "format_instruction",
    "format_dsl",
    "parse_instruction",
    "Array",
    "Field",
    "Record",
    "Scalar",
    "array",
    "s8",
    "s16",
    "s32",
    "s64",
    "u8",
    "u16",
    "u32",
    "u64",
    "Register",
    "R0",
    "R1",
    "R2",
    "R3",
    "R4",
    "R5",
    "R6",
    "R7",
    "R8",
    "R9",
    "R10",
]
