"""`Program`: a builder that reads like the eBPF it emits, one method per instruction.

Jump targets, subprogram calls and maps are named, not numbered: a `Program`
records symbols and `resolve` turns them into slot offsets and map file
descriptors once everything is known, so code can be written top to bottom.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Union

from .errors import AsmError
from .frame import Frame
from .helpers import helper_id
from .instruction import S32, Instruction, encode, fits, to_s32, with_slots
from .linker import is_map_ref, link
from .opcodes import (
    FETCH,
    LD_IMM64,
    MOVSX_WIDTHS,
    SIGNED_OFF,
    SWAP_WIDTHS,
    AluOp,
    AtomicOp,
    ByteOrder,
    CallSrc,
    InsnClass,
    JmpOp,
    Mode,
    PseudoSrc,
    Size,
    Source,
)
from .registers import Register
from .text import format_dsl, format_instruction

Operand = Union[Register, int]
"""A register selects the register form of an instruction, an int the immediate form."""

_ALL_SIZES = tuple(Size)
_NARROW_SIZES = (Size.B, Size.H, Size.W)  # what sign-extending and legacy packet loads read
_ATOMIC_SIZES = (Size.W, Size.DW)
_WIDTH = {InsnClass.ALU64: 64, InsnClass.ALU: 32, InsnClass.JMP: 64, InsnClass.JMP32: 32}


def _register(value: object, role: str) -> Register:
    if not isinstance(value, Register):
        raise AsmError(f"{role} must be a register R0..R10, not {value!r}")
    return value


def _immediate(value: int, bits: int) -> int:
    """`value` as the signed 32-bit imm field.

    A 64-bit operation sign-extends imm, so only signed 32-bit values mean what
    they say; a 32-bit operation also takes unsigned 32-bit values.
    """
    if not isinstance(value, int):
        raise AsmError(f"an immediate must be an int, not {value!r}")
    if fits(value, S32) or (bits == 32 and 0 <= value <= 0xFFFFFFFF):
        return to_s32(value)
    raise AsmError(f"immediate {value:#x} does not fit a {bits}-bit operation's 32-bit imm")


def _sizes(size: Size, allowed: tuple[Size, ...]) -> Size:
    if size not in allowed:
        raise AsmError(f"sizes are {', '.join(s.name for s in allowed)}, not {size!r}")
    return size


def _label(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise AsmError(f"a label must be a non-empty str, not {name!r}")
    return name


def _names_errors(method: Callable) -> Callable:
    """Make an AsmError from a DSL method name the program, the slot and the call."""

    @functools.wraps(method)
    def checked(self: Program, *args: object, **kwargs: object) -> None:
        try:
            method(self, *args, **kwargs)
        except AsmError as error:
            call = ", ".join([repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()])
            raise AsmError(f"{self.name}: insn {len(self)} {method.__name__}({call}): {error}") from None

    return checked


def _method(name: str, doc: str, method: Callable) -> Callable:
    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return _names_errors(method)


def _twin_name(name: str) -> str:
    """`add` -> `add32`, `or_` -> `or32`."""
    return name.rstrip("_") + "32"


def _alu_methods(name: str, op: AluOp, symbol: str, off: int = 0) -> tuple[Callable, Callable]:
    """The 64-bit method and its `...32` twin for a two-operand ALU operation."""

    def make(insn_class: InsnClass, method_name: str) -> Callable:
        def method(self: Program, dst: Register, operand: Operand) -> None:
            self._alu(insn_class, op, dst, operand, off)

        return _method(method_name, f"dst {symbol} operand, on {_WIDTH[insn_class]} bits.", method)

    return make(InsnClass.ALU64, name), make(InsnClass.ALU, _twin_name(name))


def _jump_methods(name: str, op: JmpOp, symbol: str) -> tuple[Callable, Callable]:
    """The 64-bit conditional jump method and its `...32` twin."""

    def make(insn_class: InsnClass, method_name: str) -> Callable:
        def method(self: Program, dst: Register, operand: Operand, label: str) -> None:
            opcode, src, imm = self._operands(insn_class, op, operand)
            self.emit(Instruction(opcode, _register(dst, "dst"), src, imm=imm, symbol=_label(label)))

        doc = f"Jump to `label` if dst {symbol} operand, compared on {_WIDTH[insn_class]} bits."
        return _method(method_name, doc, method)

    return make(InsnClass.JMP, name), make(InsnClass.JMP32, _twin_name(name))


def _atomic_method(name: str, op: AtomicOp, description: str) -> Callable:
    """A method for one atomic read-modify-write operation."""

    def method(self: Program, size: Size, dst: Register, off: int, src: Register, fetch: bool = False) -> None:
        self._atomic(size, dst, off, src, op | (FETCH if fetch else 0))

    return _method(name, f"Atomically {description}; with `fetch`, src receives the old value.", method)


class Program:
    """An eBPF program under construction: emit instructions, place labels, then `assemble`.

    `frame` hands out the program's stack slots; `new_label` makes label names
    that no other part of the program uses, for code emitted more than once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.frame = Frame(name)
        self._instructions: list[Instruction] = []
        self._labels: dict[str, int] = {}
        self._taken: set[str] = set()  # labels placed or made, and symbols referenced
        self._slots = 0

    def __len__(self) -> int:
        """The number of 8-byte slots; a 64-bit immediate load takes two."""
        return self._slots

    def __repr__(self) -> str:
        return f"Program({self.name!r}, {len(self)} slots)"

    def __str__(self) -> str:
        """A listing in LLVM syntax with labels and symbols, which `asm.assemble` reads back."""
        return self.listing()

    def listing(self, dsl: bool = False) -> str:
        """The program with its labels, jumps to them by name, and its maps by name; with `dsl`, helpers
        by name and map loads as `map[name]` (`format_dsl`), for reading rather than `asm.assemble`."""
        show = format_dsl if dsl else format_instruction
        at_slot: dict[int, list[str]] = {}
        for name, slot in self._labels.items():
            at_slot.setdefault(slot, []).append(f"{name}:")
        lines = []
        for slot, insn in with_slots(self._instructions):
            lines += at_slot.pop(slot, [])
            lines.append(f"\t{show(insn)}")
        lines += at_slot.pop(len(self), [])
        return "".join(f"{line}\n" for line in lines)

    @property
    def instructions(self) -> list[Instruction]:
        """The instructions as emitted, with jump targets and maps still symbolic."""
        return list(self._instructions)

    @property
    def labels(self) -> dict[str, int]:
        """Each label's slot index."""
        return dict(self._labels)

    @property
    def map_names(self) -> set[str]:
        """The maps referenced by name; `assemble` needs a file descriptor for each."""
        return {insn.symbol for insn in self._instructions if is_map_ref(insn)}

    # -- building -------------------------------------------------------

    def emit(self, insn: Instruction) -> None:
        """Append an instruction; every DSL method ends here."""
        self._instructions.append(insn)
        self._slots += insn.slots
        if insn.symbol is not None:
            self._taken.add(insn.symbol)

    def label(self, name: str) -> None:
        """Name the position of the next instruction as a jump or call target."""
        if _label(name) in self._labels:
            raise AsmError(f"{self.name}: label {name!r} is defined twice")
        self._labels[name] = len(self)
        self._taken.add(name)

    def new_label(self, hint: str) -> str:
        """A label name nothing else in the program uses yet: `hint` itself if free, else `hint.2`, `hint.3`...

        A helper that branches makes its own labels with it, so that it can be
        emitted twice in one program; the label is placed with `label` as usual.
        """
        name, number = _label(hint), 1
        while name in self._taken:
            number += 1
            name = f"{hint}.{number}"
        self._taken.add(name)
        return name

    @staticmethod
    def _operands(insn_class: InsnClass, op: int, operand: Operand) -> tuple[int, int, int]:
        """Opcode, src and imm for the register or immediate form of an operation."""
        if isinstance(operand, Register):
            return insn_class | op | Source.X, operand, 0
        if not isinstance(operand, int):
            raise AsmError(f"operand must be a register or an int, not {operand!r}")
        return insn_class | op | Source.K, 0, _immediate(operand, _WIDTH[insn_class])

    def _alu(self, insn_class: InsnClass, op: AluOp, dst: Register, operand: Operand, off: int = 0) -> None:
        opcode, src, imm = self._operands(insn_class, op, operand)
        if op in (AluOp.LSH, AluOp.RSH, AluOp.ARSH) and not isinstance(operand, Register):
            if not 0 <= imm < _WIDTH[insn_class]:
                raise AsmError(f"shift by {imm} is out of range for {_WIDTH[insn_class]} bits")
        self.emit(Instruction(opcode, _register(dst, "dst"), src, off, imm))

    # -- arithmetic -----------------------------------------------------

    add, add32 = _alu_methods("add", AluOp.ADD, "+=")
    sub, sub32 = _alu_methods("sub", AluOp.SUB, "-=")
    mul, mul32 = _alu_methods("mul", AluOp.MUL, "*=")
    div, div32 = _alu_methods("div", AluOp.DIV, "/= (unsigned)")
    sdiv, sdiv32 = _alu_methods("sdiv", AluOp.DIV, "/= (signed)", off=SIGNED_OFF)
    mod, mod32 = _alu_methods("mod", AluOp.MOD, "%= (unsigned)")
    smod, smod32 = _alu_methods("smod", AluOp.MOD, "%= (signed)", off=SIGNED_OFF)
    or_, or32 = _alu_methods("or_", AluOp.OR, "|=")
    and_, and32 = _alu_methods("and_", AluOp.AND, "&=")
    xor, xor32 = _alu_methods("xor", AluOp.XOR, "^=")
    lsh, lsh32 = _alu_methods("lsh", AluOp.LSH, "<<=")
    rsh, rsh32 = _alu_methods("rsh", AluOp.RSH, ">>= (logical)")
    arsh, arsh32 = _alu_methods("arsh", AluOp.ARSH, ">>= (arithmetic)")
    mov, mov32 = _alu_methods("mov", AluOp.MOV, "=")

    @_names_errors
    def neg(self, dst: Register) -> None:
        """dst = -dst, on 64 bits."""
        self._alu(InsnClass.ALU64, AluOp.NEG, dst, 0)

    @_names_errors
    def neg32(self, dst: Register) -> None:
        """dst = -dst, on 32 bits (the upper half is zeroed)."""
        self._alu(InsnClass.ALU, AluOp.NEG, dst, 0)

    @_names_errors
    def movsx(self, dst: Register, src: Register, width: int) -> None:
        """dst = src's low `width` bits (8, 16 or 32), sign-extended to 64 bits."""
        self._movsx(InsnClass.ALU64, dst, src, width)

    @_names_errors
    def movsx32(self, dst: Register, src: Register, width: int) -> None:
        """dst = src's low `width` bits (8 or 16), sign-extended to 32 bits."""
        self._movsx(InsnClass.ALU, dst, src, width)

    def _movsx(self, insn_class: InsnClass, dst: Register, src: Register, width: int) -> None:
        if width not in MOVSX_WIDTHS or width >= _WIDTH[insn_class]:
            raise AsmError(f"cannot sign-extend {width} bits into {_WIDTH[insn_class]}")
        self._alu(insn_class, AluOp.MOV, dst, _register(src, "src"), off=width)

    @_names_errors
    def to_le(self, dst: Register, width: int) -> None:
        """Convert dst's low `width` bits from host order to little endian, zeroing the rest."""
        self._swap(InsnClass.ALU, ByteOrder.LE, dst, width)

    @_names_errors
    def to_be(self, dst: Register, width: int) -> None:
        """Convert dst's low `width` bits from host order to big endian, zeroing the rest."""
        self._swap(InsnClass.ALU, ByteOrder.BE, dst, width)

    @_names_errors
    def bswap(self, dst: Register, width: int) -> None:
        """Reverse the order of dst's low `width` bytes whatever the host order, zeroing the rest."""
        self._swap(InsnClass.ALU64, ByteOrder.LE, dst, width)

    def _swap(self, insn_class: InsnClass, order: ByteOrder, dst: Register, width: int) -> None:
        if width not in SWAP_WIDTHS:
            raise AsmError(f"byte swaps take widths {SWAP_WIDTHS}, not {width}")
        self.emit(Instruction(insn_class | AluOp.END | order, _register(dst, "dst"), imm=width))

    # -- memory ---------------------------------------------------------

    def _memory(
        self, class_and_mode: int, size: Size, allowed: tuple[Size, ...],
        dst: Register, src: Register, off: int, imm: int = 0,
    ) -> None:
        """A register-to-memory or memory-to-register instruction; `imm` selects an atomic operation."""
        opcode = class_and_mode | _sizes(size, allowed)
        self.emit(Instruction(opcode, _register(dst, "dst"), _register(src, "src"), off, imm))

    @_names_errors
    def ldx(self, size: Size, dst: Register, src: Register, off: int) -> None:
        """dst = *(size *)(src + off), zero-extended."""
        self._memory(InsnClass.LDX | Mode.MEM, size, _ALL_SIZES, dst, src, off)

    @_names_errors
    def ldxs(self, size: Size, dst: Register, src: Register, off: int) -> None:
        """dst = *(signed size *)(src + off), sign-extended to 64 bits."""
        self._memory(InsnClass.LDX | Mode.MEMSX, size, _NARROW_SIZES, dst, src, off)

    @_names_errors
    def stx(self, size: Size, dst: Register, off: int, src: Register) -> None:
        """*(size *)(dst + off) = src."""
        self._memory(InsnClass.STX | Mode.MEM, size, _ALL_SIZES, dst, src, off)

    @_names_errors
    def st(self, size: Size, dst: Register, off: int, imm: int) -> None:
        """*(size *)(dst + off) = imm."""
        opcode = InsnClass.ST | _sizes(size, _ALL_SIZES) | Mode.MEM
        bits = 64 if size == Size.DW else 32
        self.emit(Instruction(opcode, _register(dst, "dst"), off=off, imm=_immediate(imm, bits)))

    @_names_errors
    def ld_abs(self, size: Size, imm: int) -> None:
        """Legacy socket-filter load: r0 = ntoh(*(size *)(skb->data + imm))."""
        opcode = InsnClass.LD | _sizes(size, _NARROW_SIZES) | Mode.ABS
        self.emit(Instruction(opcode, imm=_immediate(imm, 64)))

    @_names_errors
    def ld_ind(self, size: Size, src: Register, imm: int) -> None:
        """Legacy socket-filter load: r0 = ntoh(*(size *)(skb->data + src + imm))."""
        opcode = InsnClass.LD | _sizes(size, _NARROW_SIZES) | Mode.IND
        self.emit(Instruction(opcode, src=_register(src, "src"), imm=_immediate(imm, 64)))

    # -- atomics --------------------------------------------------------

    def _atomic(self, size: Size, dst: Register, off: int, src: Register, imm: int) -> None:
        self._memory(InsnClass.STX | Mode.ATOMIC, size, _ATOMIC_SIZES, dst, src, off, imm)

    atomic_add = _atomic_method("atomic_add", AtomicOp.ADD, "*(size *)(dst + off) += src")
    atomic_or = _atomic_method("atomic_or", AtomicOp.OR, "*(size *)(dst + off) |= src")
    atomic_and = _atomic_method("atomic_and", AtomicOp.AND, "*(size *)(dst + off) &= src")
    atomic_xor = _atomic_method("atomic_xor", AtomicOp.XOR, "*(size *)(dst + off) ^= src")

    @_names_errors
    def atomic_xchg(self, size: Size, dst: Register, off: int, src: Register) -> None:
        """Atomically swap src and *(size *)(dst + off)."""
        self._atomic(size, dst, off, src, AtomicOp.XCHG)

    @_names_errors
    def atomic_cmpxchg(self, size: Size, dst: Register, off: int, src: Register) -> None:
        """Atomically: if *(size *)(dst + off) == r0, store src there; r0 receives the old value."""
        self._atomic(size, dst, off, src, AtomicOp.CMPXCHG)

    # -- 64-bit immediate loads -----------------------------------------

    def _ld_imm64(
        self, dst: Register, pseudo: PseudoSrc, imm: int, next_imm: int = 0, symbol: Optional[str] = None
    ) -> None:
        self.emit(Instruction(LD_IMM64, _register(dst, "dst"), pseudo, imm=imm, next_imm=next_imm, symbol=symbol))

    @_names_errors
    def ld_imm64(self, dst: Register, value: int) -> None:
        """dst = a 64-bit constant (signed or unsigned)."""
        if not -(1 << 63) <= value < 1 << 64:
            raise AsmError(f"{value:#x} does not fit in 64 bits")
        self._ld_imm64(dst, PseudoSrc.IMM64, to_s32(value), to_s32(value >> 32))

    @_names_errors
    def ld_map(self, dst: Register, map_ref: Union[str, int]) -> None:
        """dst = a pointer to a map, named (resolved by `assemble`) or given as a file descriptor."""
        self._ld_map_ref(dst, PseudoSrc.MAP_FD, map_ref, 0)

    @_names_errors
    def ld_map_value(self, dst: Register, map_ref: Union[str, int], offset: int) -> None:
        """dst = the address `offset` bytes into the value of an array map (element 0)."""
        self._ld_map_ref(dst, PseudoSrc.MAP_VALUE, map_ref, offset)

    def _ld_map_ref(self, dst: Register, pseudo: PseudoSrc, map_ref: Union[str, int], offset: int) -> None:
        if isinstance(map_ref, str):
            self._ld_imm64(dst, pseudo, 0, offset, symbol=_label(map_ref))
        else:
            self._ld_imm64(dst, pseudo, map_ref, offset)

    @_names_errors
    def ld_map_idx(self, dst: Register, index: int) -> None:
        """dst = a pointer to the map at `index` in the fd array given at load time."""
        self._ld_imm64(dst, PseudoSrc.MAP_IDX, index)

    @_names_errors
    def ld_map_idx_value(self, dst: Register, index: int, offset: int) -> None:
        """dst = the address `offset` bytes into the value of the map at `index` in the fd array."""
        self._ld_imm64(dst, PseudoSrc.MAP_IDX_VALUE, index, offset)

    @_names_errors
    def ld_btf_id(self, dst: Register, btf_id: int) -> None:
        """dst = the address of the kernel variable with this BTF id."""
        self._ld_imm64(dst, PseudoSrc.BTF_ID, btf_id)

    @_names_errors
    def ld_func(self, dst: Register, label: str) -> None:
        """dst = a pointer to the subprogram at `label` (for callbacks such as bpf_loop)."""
        self._ld_imm64(dst, PseudoSrc.FUNC, 0, symbol=_label(label))

    # -- control flow ---------------------------------------------------

    @_names_errors
    def ja(self, label: str) -> None:
        """Jump to `label` (within ±32767 slots)."""
        self.emit(Instruction(InsnClass.JMP | JmpOp.JA, symbol=_label(label)))

    @_names_errors
    def gotol(self, label: str) -> None:
        """Jump to `label`, which may be further away than `ja` reaches."""
        self.emit(Instruction(InsnClass.JMP32 | JmpOp.JA, symbol=_label(label)))

    jeq, jeq32 = _jump_methods("jeq", JmpOp.JEQ, "==")
    jne, jne32 = _jump_methods("jne", JmpOp.JNE, "!=")
    jgt, jgt32 = _jump_methods("jgt", JmpOp.JGT, "> (unsigned)")
    jge, jge32 = _jump_methods("jge", JmpOp.JGE, ">= (unsigned)")
    jlt, jlt32 = _jump_methods("jlt", JmpOp.JLT, "< (unsigned)")
    jle, jle32 = _jump_methods("jle", JmpOp.JLE, "<= (unsigned)")
    jset, jset32 = _jump_methods("jset", JmpOp.JSET, "& (any bit set)")
    jsgt, jsgt32 = _jump_methods("jsgt", JmpOp.JSGT, "> (signed)")
    jsge, jsge32 = _jump_methods("jsge", JmpOp.JSGE, ">= (signed)")
    jslt, jslt32 = _jump_methods("jslt", JmpOp.JSLT, "< (signed)")
    jsle, jsle32 = _jump_methods("jsle", JmpOp.JSLE, "<= (signed)")

    @_names_errors
    def call(self, helper: Union[str, int]) -> None:
        """Call a kernel helper by name (with or without `bpf_`) or id; arguments in R1-R5, result in R0."""
        self.emit(Instruction(InsnClass.JMP | JmpOp.CALL, src=CallSrc.HELPER, imm=helper_id(helper)))

    @_names_errors
    def call_local(self, label: str) -> None:
        """Call the subprogram at `label` (a BPF-to-BPF call)."""
        self.emit(Instruction(InsnClass.JMP | JmpOp.CALL, src=CallSrc.LOCAL, symbol=_label(label)))

    @_names_errors
    def call_kfunc(self, btf_id: int) -> None:
        """Call the kernel function with this BTF id."""
        self.emit(Instruction(InsnClass.JMP | JmpOp.CALL, src=CallSrc.KFUNC, imm=btf_id))

    def exit(self) -> None:
        """Return R0 to the caller (or to the kernel, from the main program)."""
        self.emit(Instruction(InsnClass.JMP | JmpOp.EXIT))

    # -- resolution -----------------------------------------------------

    def resolve(self, maps: Optional[Mapping[str, int]] = None) -> list[Instruction]:
        """The instructions with labels turned into slot offsets and map names into `maps[name]` fds."""
        return link(self._instructions, self._labels, maps or {}, self._where)

    def _where(self, slot: int, insn: Instruction) -> str:
        return f"{self.name}: insn {slot} `{format_instruction(insn)}`"

    def assemble(self, maps: Optional[Mapping[str, int]] = None) -> bytes:
        """The bytecode, ready for BPF_PROG_LOAD; every referenced map needs an fd in `maps`."""
        return encode(self.resolve(maps))
