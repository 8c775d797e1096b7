"""asm.text on its own: exact round trips, the syntax it accepts, and its errors."""
import pytest
from hypothesis import given
from hypothesis import strategies as st
from instruction_set import KINDS, instructions

from asm import DW, R0, R1, R2, AsmError, Instruction, Program, assemble, decode, disassemble, encode, parse_instruction


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_reads_back_what_it_prints(kind):
    for insn in kind.samples():
        assert decode(assemble(disassemble(insn.encode()))) == [insn]


@given(st.lists(instructions(), min_size=1, max_size=50))
def test_bytes_survive_text(stream):
    code = encode(stream)
    assert assemble(disassemble(code)) == code


@pytest.mark.parametrize(
    "line, expected",
    [
        ("r1 = *(u32 *)(r6 + 16)", Instruction(0x61, dst=1, src=6, off=16)),  # LLVM without alu32 spells w1 as r1
        ("w1 = *(u32 *)(r6 + 0x10)", Instruction(0x61, dst=1, src=6, off=16)),
        ("*(u8 *)(r10 - 1) = r2", Instruction(0x73, dst=10, src=2, off=-1)),
        ("lock *(u32 *)(r2 + 0) += r3", Instruction(0xC3, dst=2, src=3)),
        ("if r1 > 0x4 goto +2", Instruction(0x25, dst=1, off=2, imm=4)),
        ("if r1 > 4 goto -2", Instruction(0x25, dst=1, off=-2, imm=4)),
        ("w1 = 0xffffffff", Instruction(0xB4, dst=1, imm=-1)),  # unsigned 32-bit immediates, as llvm-mc reads them
        ("r1 = 0xFFFFFFFFFFFFFFFF ll", Instruction(0x18, dst=1, imm=-1, next_imm=-1)),
        ("r1 = 0x123 ll", Instruction(0x18, dst=1, imm=0x123)),
        ("call 5", Instruction(0x85, imm=5)),
        ("call pc-3", Instruction(0x85, src=1, imm=-3)),
        ("call kfunc 1234", Instruction(0x85, src=2, imm=1234)),
        ("ld_pseudo r1, 2, 7, 8", Instruction(0x18, dst=1, src=2, imm=7, next_imm=8)),
        ("r0 = *(u16 *)skb[r3 + 4]", Instruction(0x48, src=3, imm=4)),
        ("r1 = bswap16 r1", Instruction(0xD7, dst=1, imm=16)),
        ("r1 = (s8)r2", Instruction(0xBF, dst=1, src=2, off=8)),
        ("w1 s/= 0x3", Instruction(0x34, dst=1, off=1, imm=3)),
        ("r0 = atomic_fetch_add((u64 *)(r1 + 0x0), r0)", Instruction(0xDB, dst=1, imm=1)),
        ("r0 = cmpxchg_64(r1 + 8, r0, r2)", Instruction(0xDB, dst=1, src=2, off=8, imm=0xF1)),
        ("  gotol   +0x3  ", Instruction(0x06, imm=3)),
    ],
)
def test_reads_llvm_spellings(line, expected):
    assert parse_instruction(line) == expected


def test_reads_comments_labels_and_blank_lines():
    text = """
        # count down from three
        r1 = 3          // decimal
    loop: r1 += -1
        if r1 != 0 goto loop
        empty:
    done:
        exit
    """
    assert decode(assemble(text)) == [
        Instruction(0xB7, dst=1, imm=3),
        Instruction(0x07, dst=1, imm=-1),
        Instruction(0x55, dst=1, off=-2),
        Instruction(0x95),
    ]


def test_map_names_resolve_from_the_maps_given():
    code = assemble("ld_pseudo r1, 1, counts\nld_pseudo r2, 2, config, 8\nexit", maps={"counts": 4, "config": 5})
    assert decode(code)[:2] == [
        Instruction(0x18, dst=1, src=1, imm=4),
        Instruction(0x18, dst=2, src=2, imm=5, next_imm=8),
    ]


def test_program_listing_reads_back():
    p = Program("listing")
    p.label("top")
    p.ld_map(R1, "counts")
    p.ld_func(R2, "sub")
    p.call_local("sub")
    p.atomic_add(DW, R0, 0, R1, fetch=True)
    p.jne(R0, 0, "top")
    p.gotol("end")
    p.label("sub")
    p.label("end")
    p.exit()
    assert str(p).splitlines()[:4] == ["top:", "\tld_pseudo r1, 0x1, counts", "\tld_pseudo r2, 0x4, sub", "\tcall sub"]
    assert assemble(str(p), maps={"counts": 9}) == p.assemble(maps={"counts": 9})


def test_dsl_listing_names_helpers_and_maps_and_keeps_labels():
    p = Program("dsl")
    p.label("top")
    p.ld_map(R1, "counts")
    p.ld_map_value(R2, "config", 8)
    p.call("map_lookup_elem")
    p.call(5)
    p.call_local("sub")
    p.jne(R0, 0, "top")
    p.label("sub")
    p.exit()
    assert p.listing(dsl=True).splitlines() == [
        "top:", "\tr1 = map[counts]", "\tr2 = map[config][0]+0x8", "\tcall bpf_map_lookup_elem",
        "\tcall bpf_ktime_get_ns", "\tcall sub", "\tif r0 != 0x0 goto top", "sub:", "\texit"]
    assert p.listing() == str(p)  # the llvm listing stays what assemble reads back


@pytest.mark.parametrize(
    "text, message",
    [
        ("r1 = r2 + r3", r"line 1: 'r1 = r2 \+ r3': not an instruction"),
        ("\nr1 ?= 2", r"line 2: .*unexpected '\?= 2'"),
        ("r1 = 0x100000000", "0x100000000 does not fit in 32 bits"),
        ("r1 = 0x10000000000000000 ll", "does not fit in 64 bits"),
        ("goto +0x8000", "off 32768"),
        ("r1 = le16 r2", "must be the same register"),
        ("w1 = cmpxchg32_32(r1 + 0, w1, w2)", "expected w0, not w1"),
        ("goto nowhere", "label 'nowhere' is not defined"),
        ("a:\na:\nexit", "line 2: .*label 'a' is defined twice"),
        ("ld_pseudo r1, 1, counts", "map 'counts' has no file descriptor"),
        ("ld_pseudo r1, 3, somewhere\nsomewhere:", "cannot refer to a label"),
    ],
)
def test_errors_name_the_line(text, message):
    with pytest.raises(AsmError, match=message):
        assemble(text)


@pytest.mark.parametrize(
    "insn",
    [
        Instruction(0x8D),  # callx: not in RFC 9669
        Instruction(0xB7, dst=1, off=2),  # mov with a reserved off
        Instruction(0x07, dst=1, src=2, imm=1),  # immediate form with a src register
        Instruction(0xD4, dst=1, imm=8),  # no 8-bit byte swap
        Instruction(0xDB, dst=1, imm=0x02),  # no such atomic operation
        Instruction(0x18, off=1),  # 64-bit load with an off
    ],
)
def test_disassembly_refuses_invalid_instructions(insn):
    with pytest.raises(AsmError, match="slot 0: .*not a valid eBPF instruction"):
        disassemble(insn.encode())
