"""LLVM's BPF assembly syntax, read and written from one table of templates.

Each instruction form is a template such as ``{dst:w} = *(u32 *)({src:r} {off:mem})``:
printing fills the slots in, parsing matches a tokenized line against the
templates with the same shape. One table for both directions keeps
`disassemble` and `assemble` exact inverses.

The text is what ``llvm-objdump -d --mcpu=v4`` prints and ``llvm-mc -mcpu=v4``
reads. Where LLVM's syntax cannot express an instruction, the extensions are:
``call pc+0x3`` (BPF-to-BPF call by offset, as the kernel's verifier log writes
it), ``call kfunc 0x3`` (kfunc by BTF id), a fourth ``ld_pseudo`` operand for
the second slot's immediate, and ``skb[r1 + 0x4]`` for legacy indirect loads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

from .errors import AsmError
from .helpers import HELPERS
from .instruction import Instruction, decode, encode, to_s32, with_slots
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

# -- numbers ------------------------------------------------------------


def _hex(value: int) -> str:
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def _signed(value: int) -> str:
    return _hex(value) if value < 0 else f"+{value:#x}"


def _spaced(value: int) -> str:
    return f"- {-value:#x}" if value < 0 else f"+ {value:#x}"


def _unsigned(value: int) -> str:
    return f"{value & 0xFFFFFFFF:#x}"


def _in_range(value: int, bits: int) -> int:
    """`value` if it fits `bits` as a signed or an unsigned number, as LLVM accepts immediates."""
    if not -(1 << (bits - 1)) <= value < 1 << bits:
        raise AsmError(f"{_hex(value)} does not fit in {bits} bits")
    return value


@dataclass(frozen=True)
class _Style:
    """How one slot of a template prints a field and reads it back."""

    show: Callable[[int], str]
    read_bits: int  # width checked when reading; 0 leaves the check to Instruction
    labels: bool = False  # may name a label (jump targets) or map (ld_pseudo) instead
    numbers: str = "num"  # the kind of token that carries the number


_STYLES = {
    "imm": _Style(_hex, 32),
    "uimm": _Style(_unsigned, 32),
    "ref": _Style(_unsigned, 32, labels=True),
    "imm64": _Style(_hex, 64),
    "mem": _Style(_spaced, 0),
    "jump": _Style(_signed, 0, labels=True),
    "pcrel": _Style(lambda value: f"pc{_signed(value)}", 0, labels=True, numbers="pcrel"),
    "hex": _Style(_hex, 0),
}

# -- tokens -------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<reg>[rw]\d+)\b
      | (?P<pcrel>pc\s*[-+]\s*(?:0[xX][0-9a-fA-F]+|\d+))\b
      | (?P<num>[-+]?\s*(?:0[xX][0-9a-fA-F]+|\d+))\b
      | (?P<op>s>>=|<<=|>>=|s/=|s%=|s>=|s<=|[-+*/%&|^]=|==|!=|>=|<=|s>|s<|[-+=<>&*(),\[\]])
      | (?P<word>[A-Za-z_.$][\w.$]*)
    )""",
    re.VERBOSE,
)
_SLOT = re.compile(r"\{(\w+):(\w+)\}")


@dataclass(frozen=True)
class _Token:
    kind: str  # reg, num, pcrel, op, word
    text: str


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise AsmError(f"unexpected {text[position:].strip()!r}")
        kind = match.lastgroup
        tokens.append(_Token(kind, match.group(kind)))
        position = match.end()
    return tokens


def _number(token: _Token) -> int:
    digits = re.sub(r"\s|pc", "", token.text)
    return int(digits, 16 if "0x" in digits.lower() else 10)


# -- templates ----------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    field: str  # dst, src, off, imm, next_imm, or value (imm and next_imm as one 64-bit number)
    style: str  # r or w for registers, else a key of _STYLES


@dataclass(frozen=True)
class _Form:
    """One spelling of the instructions with `opcode` whose `fixed` fields have the given values."""

    opcode: int
    template: str
    fixed: tuple[tuple[str, int], ...] = ()
    parse_only: bool = False

    def parts(self) -> list[Union[_Token, _Slot]]:
        parts: list[Union[_Token, _Slot]] = []
        position = 0
        for match in _SLOT.finditer(self.template):
            parts += _tokenize(self.template[position : match.start()])
            parts.append(_Slot(match.group(1), match.group(2)))
            position = match.end()
        return parts + _tokenize(self.template[position:])

    def fields(self) -> set[str]:
        named = {name for name, _ in self.fixed} | {match.group(1) for match in _SLOT.finditer(self.template)}
        return named | ({"imm", "next_imm"} if "value" in named else set())

    def matches(self, insn: Instruction) -> bool:
        """Whether this form prints `insn` without losing a field."""
        unused = {"dst", "src", "off", "imm", "next_imm"} - self.fields()
        return (
            insn.opcode == self.opcode
            and all(getattr(insn, name) == value for name, value in self.fixed)
            and not any(getattr(insn, name) for name in unused)
        )

    def show(self, insn: Instruction) -> str:
        def fill(match: re.Match) -> str:
            field, style = match.groups()
            if style in ("r", "w"):
                return f"{style}{getattr(insn, field)}"
            if insn.symbol is not None and _STYLES[style].labels:
                return insn.symbol
            value = insn.value64 if field == "value" else getattr(insn, field)
            if field == "value" and value >= 1 << 63:
                value -= 1 << 64
            return _STYLES[style].show(value)

        return _SLOT.sub(fill, self.template)


_ALU_SYMBOLS = {
    AluOp.ADD: "+=",
    AluOp.SUB: "-=",
    AluOp.MUL: "*=",
    AluOp.DIV: "/=",
    AluOp.OR: "|=",
    AluOp.AND: "&=",
    AluOp.LSH: "<<=",
    AluOp.RSH: ">>=",
    AluOp.MOD: "%=",
    AluOp.XOR: "^=",
    AluOp.ARSH: "s>>=",
}
_SIGNED_ALU_SYMBOLS = {AluOp.DIV: "s/=", AluOp.MOD: "s%="}
_JMP_SYMBOLS = {
    JmpOp.JEQ: "==",
    JmpOp.JGT: ">",
    JmpOp.JGE: ">=",
    JmpOp.JSET: "&",
    JmpOp.JNE: "!=",
    JmpOp.JSGT: "s>",
    JmpOp.JSGE: "s>=",
    JmpOp.JLT: "<",
    JmpOp.JLE: "<=",
    JmpOp.JSLT: "s<",
    JmpOp.JSLE: "s<=",
}
_ATOMIC_SYMBOLS = {AtomicOp.ADD: "+=", AtomicOp.OR: "|=", AtomicOp.AND: "&=", AtomicOp.XOR: "^="}
_REGISTER_LETTER = {InsnClass.ALU64: "r", InsnClass.ALU: "w", InsnClass.JMP: "r", InsnClass.JMP32: "w"}


def _with_r_alias(form: _Form) -> list[_Form]:
    """A form, plus its spelling with r for w registers, which LLVM without alu32 uses."""
    if ":w}" not in form.template:
        return [form]
    return [form, _Form(form.opcode, form.template.replace(":w}", ":r}"), form.fixed, parse_only=True)]


def _arithmetic_forms() -> list[_Form]:
    forms = []
    for insn_class in (InsnClass.ALU64, InsnClass.ALU):
        reg = _REGISTER_LETTER[insn_class]
        bits = 64 if insn_class == InsnClass.ALU64 else 32
        signed = [(op, symbol, (("off", SIGNED_OFF),)) for op, symbol in _SIGNED_ALU_SYMBOLS.items()]
        for op, symbol, fixed in [(op, symbol, ()) for op, symbol in _ALU_SYMBOLS.items()] + signed:
            forms.append(_Form(insn_class | op | Source.K, f"{{dst:{reg}}} {symbol} {{imm:imm}}", fixed))
            forms.append(_Form(insn_class | op | Source.X, f"{{dst:{reg}}} {symbol} {{src:{reg}}}", fixed))
        forms.append(_Form(insn_class | AluOp.MOV | Source.K, f"{{dst:{reg}}} = {{imm:imm}}"))
        forms.append(_Form(insn_class | AluOp.MOV | Source.X, f"{{dst:{reg}}} = {{src:{reg}}}"))
        forms += [
            _Form(insn_class | AluOp.MOV | Source.X, f"{{dst:{reg}}} = (s{width}){{src:{reg}}}", (("off", width),))
            for width in MOVSX_WIDTHS
            if width < bits
        ]
        forms.append(_Form(insn_class | AluOp.NEG | Source.K, f"{{dst:{reg}}} = -{{dst:{reg}}}"))
    for insn_class, order, name in (
        (InsnClass.ALU, ByteOrder.LE, "le"),
        (InsnClass.ALU, ByteOrder.BE, "be"),
        (InsnClass.ALU64, ByteOrder.LE, "bswap"),
    ):
        forms += [
            _Form(insn_class | AluOp.END | order, f"{{dst:r}} = {name}{width} {{dst:r}}", (("imm", width),))
            for width in SWAP_WIDTHS
        ]
    return forms


def _jump_forms() -> list[_Form]:
    forms = [
        _Form(InsnClass.JMP | JmpOp.JA, "goto {off:jump}"),
        _Form(InsnClass.JMP32 | JmpOp.JA, "gotol {imm:jump}"),
        _Form(InsnClass.JMP | JmpOp.CALL, "call {imm:imm}", (("src", CallSrc.HELPER),)),
        _Form(InsnClass.JMP | JmpOp.CALL, "call {imm:pcrel}", (("src", CallSrc.LOCAL),)),
        _Form(InsnClass.JMP | JmpOp.CALL, "call kfunc {imm:imm}", (("src", CallSrc.KFUNC),)),
        _Form(InsnClass.JMP | JmpOp.EXIT, "exit"),
    ]
    for insn_class in (InsnClass.JMP, InsnClass.JMP32):
        reg = _REGISTER_LETTER[insn_class]
        for op, symbol in _JMP_SYMBOLS.items():
            forms.append(_Form(insn_class | op | Source.K, f"if {{dst:{reg}}} {symbol} {{imm:imm}} goto {{off:jump}}"))
            forms.append(
                _Form(insn_class | op | Source.X, f"if {{dst:{reg}}} {symbol} {{src:{reg}}} goto {{off:jump}}")
            )
    return forms


def _memory_forms() -> list[_Form]:
    forms = []
    for size in Size:
        ctype = f"u{size.bits}"
        value = "r" if size == Size.DW else "w"
        load = _Form(InsnClass.LDX | size | Mode.MEM, f"{{dst:{value}}} = *({ctype} *)({{src:r}} {{off:mem}})")
        store = _Form(InsnClass.STX | size | Mode.MEM, f"*({ctype} *)({{dst:r}} {{off:mem}}) = {{src:{value}}}")
        forms += _with_r_alias(load) + _with_r_alias(store)
        forms.append(_Form(InsnClass.ST | size | Mode.MEM, f"*({ctype} *)({{dst:r}} {{off:mem}}) = {{imm:imm}}"))
        if size == Size.DW:
            continue
        forms += [
            _Form(InsnClass.LDX | size | Mode.MEMSX, f"{{dst:r}} = *(s{size.bits} *)({{src:r}} {{off:mem}})"),
            _Form(InsnClass.LD | size | Mode.ABS, f"r0 = *({ctype} *)skb[{{imm:imm}}]"),
            _Form(InsnClass.LD | size | Mode.IND, f"r0 = *({ctype} *)skb[{{src:r}}]"),
            _Form(InsnClass.LD | size | Mode.IND, f"r0 = *({ctype} *)skb[{{src:r}} {{imm:mem}}]"),
        ]
    return forms


def _atomic_forms() -> list[_Form]:
    forms = []
    for size, reg, xchg, cmpxchg in (
        (Size.W, "w", "xchg32_32", "cmpxchg32_32"),
        (Size.DW, "r", "xchg_64", "cmpxchg_64"),
    ):
        opcode = InsnClass.STX | size | Mode.ATOMIC
        address = "({dst:r} {off:mem})"
        for op, symbol in _ATOMIC_SYMBOLS.items():
            forms += _with_r_alias(
                _Form(opcode, f"lock *(u{size.bits} *){address} {symbol} {{src:{reg}}}", (("imm", op),))
            )
            fetch = f"{{src:{reg}}} = atomic_fetch_{op.name.lower()}((u{size.bits} *){address}, {{src:{reg}}})"
            forms.append(_Form(opcode, fetch, (("imm", op | FETCH),)))
        forms += [
            _Form(opcode, f"{{src:{reg}}} = {xchg}({{dst:r}} {{off:mem}}, {{src:{reg}}})", (("imm", AtomicOp.XCHG),)),
            _Form(
                opcode,
                f"{reg}0 = {cmpxchg}({{dst:r}} {{off:mem}}, {reg}0, {{src:{reg}}})",
                (("imm", AtomicOp.CMPXCHG),),
            ),
        ]
    return forms


def _load_imm64_forms() -> list[_Form]:
    return [
        _Form(LD_IMM64, "{dst:r} = {value:imm64} ll", (("src", PseudoSrc.IMM64),)),
        _Form(LD_IMM64, "ld_pseudo {dst:r}, {src:hex}, {imm:ref}"),
        _Form(LD_IMM64, "ld_pseudo {dst:r}, {src:hex}, {imm:ref}, {next_imm:uimm}"),
    ]


_FORMS = _arithmetic_forms() + _jump_forms() + _memory_forms() + _atomic_forms() + _load_imm64_forms()
_KEYWORDS = frozenset(
    token.text for form in _FORMS for token in form.parts() if isinstance(token, _Token) and token.kind == "word"
)

# -- disassembly --------------------------------------------------------

_PRINTABLE: dict[int, list[_Form]] = {}
for _form in _FORMS:
    if not _form.parse_only:
        _PRINTABLE.setdefault(_form.opcode, []).append(_form)


def format_instruction(insn: Instruction) -> str:
    """One instruction in LLVM syntax; a symbolic target prints as its name."""
    for form in _PRINTABLE.get(insn.opcode, ()):
        if form.matches(insn):
            return form.show(insn)
    raise AsmError(f"{insn!r} is not a valid eBPF instruction")


_HELPER_NAMES = {number: f"bpf_{name}" for name, number in HELPERS.items()}


def format_dsl(insn: Instruction) -> str:
    """One instruction as the DSL names things: a helper call by the helper's name, a map load as
    `map[name]` (plus `[0]+offset` into its value), a jump by its label; the rest in LLVM syntax.

    A listing for people reading a program: `assemble` does not read these spellings back.
    """
    if insn.is_call and insn.src == CallSrc.HELPER and insn.imm in _HELPER_NAMES:
        return f"call {_HELPER_NAMES[insn.imm]}"
    if is_map_ref(insn):
        value = f"[0]+{insn.next_imm:#x}" if insn.src in (PseudoSrc.MAP_VALUE, PseudoSrc.MAP_IDX_VALUE) else ""
        return f"r{insn.dst} = map[{insn.symbol}]{value}"
    return format_instruction(insn)


def disassemble(code: bytes) -> str:
    """Bytecode as LLVM-syntax text, one instruction per line."""
    lines = []
    for slot, insn in with_slots(decode(code)):
        try:
            lines.append(format_instruction(insn))
        except AsmError as error:
            raise AsmError(f"slot {slot}: {error}") from None
    return "".join(f"{line}\n" for line in lines)


# -- assembly -----------------------------------------------------------


def _shape(part: Union[_Token, _Slot], label: bool = False) -> str:
    """What a token or slot looks like, ignoring its value: how lines find their template."""
    if isinstance(part, _Slot):
        if part.style in ("r", "w"):
            return part.style
        return "sym" if label else _STYLES[part.style].numbers
    if part.kind == "reg":
        return part.text[0]
    if part.kind in ("num", "pcrel"):
        return part.kind
    if part.kind == "word" and part.text not in _KEYWORDS:
        return "sym"
    return part.text


def _shapes(parts: list[Union[_Token, _Slot]]) -> list[tuple[str, ...]]:
    """The shapes a template accepts: with numbers, and with a name where a slot allows one."""
    named = [part for part in parts if isinstance(part, _Slot) and part.style in _STYLES and _STYLES[part.style].labels]
    shapes = [tuple(_shape(part) for part in parts)]
    if named:
        shapes.append(tuple(_shape(part, label=part is named[0]) for part in parts))
    return shapes


_BY_SHAPE: dict[tuple[str, ...], tuple[_Form, list[Union[_Token, _Slot]]]] = {}
for _form in _FORMS:
    _parts = _form.parts()
    for _key in _shapes(_parts):
        assert _key not in _BY_SHAPE, f"two templates read {' '.join(_key)!r}"
        _BY_SHAPE[_key] = (_form, _parts)


def parse_instruction(line: str) -> Instruction:
    """One instruction from LLVM syntax; a label or map name is left in `symbol`."""
    tokens = _tokenize(line)
    found = _BY_SHAPE.get(tuple(_shape(token) for token in tokens))
    if found is None:
        raise AsmError("not an instruction LLVM's BPF syntax knows")
    form, parts = found
    fields: dict[str, int] = dict(form.fixed)
    symbol = None
    for part, token in zip(parts, tokens):
        if isinstance(part, _Token):
            if part.kind == "reg" and part.text != token.text:
                raise AsmError(f"expected {part.text}, not {token.text}")
            continue
        if part.style in ("r", "w"):
            value = int(token.text[1:])
        elif token.kind == "word":
            symbol, value = token.text, 0
        else:
            value = _number(token)
            bits = _STYLES[part.style].read_bits
            if bits:
                value = _in_range(value, bits)
            if bits == 32:
                value = to_s32(value)
        if part.field == "value":
            fields["imm"], fields["next_imm"] = to_s32(value), to_s32(value >> 32)
        elif fields.setdefault(part.field, value) != value:
            raise AsmError(f"{part.field} must be the same register in both places")
    return Instruction(form.opcode, symbol=symbol, **fields)


_LABEL = re.compile(r"\s*([A-Za-z_.$][\w.$]*)\s*:")
_COMMENT = re.compile(r"(#|//).*")


def assemble(text: str, maps: Optional[Mapping[str, int]] = None) -> bytes:
    """Bytecode from LLVM-syntax text: one instruction per line, `name:` labels, `#` and `//` comments.

    Jumps and calls may name labels; `ld_pseudo r1, 1, name` names a map to be
    found in `maps`.
    """
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    line_at: dict[int, str] = {}
    slot = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw)
        try:
            while (label := _LABEL.match(line)) is not None:
                if label.group(1) in labels:
                    raise AsmError(f"label {label.group(1)!r} is defined twice")
                labels[label.group(1)] = slot
                line = line[label.end() :]
            if line.strip():
                instructions.append(parse_instruction(line))
                line_at[slot] = f"line {number}: {raw.strip()!r}"
                slot += instructions[-1].slots
        except AsmError as error:
            raise AsmError(f"line {number}: {raw.strip()!r}: {error}") from None
    return encode(link(instructions, labels, maps or {}, lambda slot, _: line_at[slot]))
