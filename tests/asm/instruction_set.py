"""Every valid eBPF instruction kind, written out from RFC 9669 independently of asm.text.

A kind is an opcode plus the values of the fields that complete it (the `src`
of a call, the `imm` of an atomic, the `off` of sdiv); its free fields take any
value. The tests draw instructions from these kinds and ask LLVM about them.
"""
from dataclasses import dataclass

from hypothesis import strategies as st

from asm import Instruction

ALU, ALU64, JMP, JMP32 = 0x04, 0x07, 0x05, 0x06
LD, LDX, ST, STX = 0x00, 0x01, 0x02, 0x03
K, X = 0x00, 0x08
SIZES = {"u32": 0x00, "u16": 0x08, "u8": 0x10, "u64": 0x18}
MEM, MEMSX, ABS, IND, ATOMIC = 0x60, 0x80, 0x20, 0x40, 0xC0

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)
RANGES = {"dst": (0, 10), "src": (0, 10), "off": S16, "imm": S32, "next_imm": S32}
EDGES = {
    "dst": (0, 10, 6),
    "src": (10, 0, 3),
    "off": (S16[0], S16[1], -8, 0),
    "imm": (S32[0], S32[1], -1, 0, 0x7B),
    "next_imm": (S32[1], S32[0], 0, -1, 0x12),
}


@dataclass(frozen=True)
class Kind:
    name: str
    opcode: int
    fixed: tuple = ()  # (field, value) pairs
    free: tuple = ()  # fields that take any value in RANGES
    llvm: bool = True  # False where LLVM's syntax cannot express the kind (asm.text extends it)
    limits: tuple = ()  # (field, (low, high)) pairs narrower than RANGES

    def build(self, **free: int) -> Instruction:
        return Instruction(self.opcode, **dict(self.fixed), **free)

    def _range(self, field: str) -> tuple:
        return dict(self.limits).get(field, RANGES[field])

    def _edges(self, field: str) -> tuple:
        return (*self._range(field), -1, 0) if field in dict(self.limits) else EDGES[field]

    def samples(self) -> list[Instruction]:
        """A handful of instances exercising each free field's extremes."""
        edges = {field: self._edges(field) for field in self.free}
        count = max(map(len, edges.values()), default=1)
        return [self.build(**{field: values[i % len(values)] for field, values in edges.items()}) for i in range(count)]

    def strategy(self) -> st.SearchStrategy:
        return st.fixed_dictionaries({field: st.integers(*self._range(field)) for field in self.free}).map(
            lambda free: self.build(**free)
        )


def _alu_kinds() -> list:
    kinds = []
    ops = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50, "lsh": 0x60, "rsh": 0x70}
    ops |= {"mod": 0x90, "xor": 0xA0, "mov": 0xB0, "arsh": 0xC0}
    for cls_name, cls in (("alu64", ALU64), ("alu", ALU)):
        for name, op in ops.items():
            kinds.append(Kind(f"{cls_name} {name} K", cls | op | K, free=("dst", "imm")))
            kinds.append(Kind(f"{cls_name} {name} X", cls | op | X, free=("dst", "src")))
        for name, op in (("sdiv", 0x30), ("smod", 0x90)):
            kinds.append(Kind(f"{cls_name} {name} K", cls | op | K, (("off", 1),), ("dst", "imm")))
            kinds.append(Kind(f"{cls_name} {name} X", cls | op | X, (("off", 1),), ("dst", "src")))
        kinds.append(Kind(f"{cls_name} neg", cls | 0x80 | K, free=("dst",)))
        widths = (8, 16, 32) if cls == ALU64 else (8, 16)
        kinds += [Kind(f"{cls_name} movsx{w}", cls | 0xB0 | X, (("off", w),), ("dst", "src")) for w in widths]
    for cls_name, opcode in (("le", ALU | 0xD0 | K), ("be", ALU | 0xD0 | X), ("bswap", ALU64 | 0xD0 | K)):
        kinds += [Kind(f"{cls_name}{w}", opcode, (("imm", w),), ("dst",)) for w in (16, 32, 64)]
    return kinds


def _jump_kinds() -> list:
    ops = {"jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60, "jsge": 0x70}
    ops |= {"jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0}
    kinds = [
        Kind("ja", JMP | 0x00, free=("off",)),
        Kind("gotol", JMP32 | 0x00, free=("imm",), limits=(("imm", S16),)),  # llvm-mc reads only 16-bit targets
        Kind("gotol far", JMP32 | 0x00, free=("imm",), llvm=False),
        Kind("call helper", JMP | 0x80, (("src", 0),), ("imm",)),
        Kind("call local", JMP | 0x80, (("src", 1),), ("imm",), llvm=False),
        Kind("call kfunc", JMP | 0x80, (("src", 2),), ("imm",), llvm=False),
        Kind("exit", JMP | 0x90),
    ]
    for cls_name, cls in (("jmp", JMP), ("jmp32", JMP32)):
        for name, op in ops.items():
            kinds.append(Kind(f"{cls_name} {name} K", cls | op | K, free=("dst", "imm", "off")))
            kinds.append(Kind(f"{cls_name} {name} X", cls | op | X, free=("dst", "src", "off")))
    return kinds


def _memory_kinds() -> list:
    kinds = []
    for ctype, size in SIZES.items():
        kinds += [
            Kind(f"ldx {ctype}", LDX | size | MEM, free=("dst", "src", "off")),
            Kind(f"st {ctype}", ST | size | MEM, free=("dst", "off", "imm")),
            Kind(f"stx {ctype}", STX | size | MEM, free=("dst", "src", "off")),
        ]
        if ctype != "u64":
            kinds += [
                Kind(f"ldxs {ctype}", LDX | size | MEMSX, free=("dst", "src", "off")),
                Kind(f"ld_abs {ctype}", LD | size | ABS, free=("imm",)),
                Kind(f"ld_ind {ctype}", LD | size | IND, free=("src",)),
                Kind(f"ld_ind {ctype} +imm", LD | size | IND, free=("src", "imm"), llvm=False),
            ]
    for ctype in ("u32", "u64"):
        opcode = STX | SIZES[ctype] | ATOMIC
        for name, op in (("add", 0x00), ("or", 0x40), ("and", 0x50), ("xor", 0xA0)):
            kinds.append(Kind(f"atomic {name} {ctype}", opcode, (("imm", op),), ("dst", "src", "off")))
            kinds.append(Kind(f"atomic fetch_{name} {ctype}", opcode, (("imm", op | 1),), ("dst", "src", "off")))
        kinds.append(Kind(f"atomic xchg {ctype}", opcode, (("imm", 0xE1),), ("dst", "src", "off")))
        kinds.append(Kind(f"atomic cmpxchg {ctype}", opcode, (("imm", 0xF1),), ("dst", "src", "off")))
    return kinds


def _load_imm64_kinds() -> list:
    kinds = [Kind("ld_imm64", 0x18, (("src", 0),), ("dst", "imm", "next_imm"))]
    for src in range(1, 7):
        kinds.append(Kind(f"ld_imm64 pseudo {src}", 0x18, (("src", src),), ("dst", "imm")))
        kinds.append(Kind(f"ld_imm64 pseudo {src} +next_imm", 0x18, (("src", src),), ("dst", "imm", "next_imm"),
                          llvm=False))
    return kinds


KINDS = _alu_kinds() + _jump_kinds() + _memory_kinds() + _load_imm64_kinds()
LLVM_KINDS = [kind for kind in KINDS if kind.llvm]


def instructions(kinds: list = KINDS) -> st.SearchStrategy:
    """Any valid instruction of the given kinds."""
    return st.sampled_from(kinds).flatmap(Kind.strategy)
