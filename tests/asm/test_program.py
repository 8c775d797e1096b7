"""The `Program` DSL: encodings, label and map resolution, and its error messages."""
import pytest

from asm import DW, R0, R1, R2, R3, R6, R10, AsmError, B, H, Instruction, Program, W, decode


def single(build) -> Instruction:
    program = Program("t")
    build(program)
    (insn,) = program.instructions
    return insn


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda p: p.mov(R6, R1), Instruction(0xBF, dst=6, src=1)),
        (lambda p: p.mov(R1, -1), Instruction(0xB7, dst=1, imm=-1)),
        (lambda p: p.mov32(R1, 0xFFFFFFFF), Instruction(0xB4, dst=1, imm=-1)),
        (lambda p: p.add(R2, -4), Instruction(0x07, dst=2, imm=-4)),
        (lambda p: p.sdiv32(R1, 3), Instruction(0x34, dst=1, off=1, imm=3)),
        (lambda p: p.smod(R1, R2), Instruction(0x9F, dst=1, src=2, off=1)),
        (lambda p: p.or_(R1, R2), Instruction(0x4F, dst=1, src=2)),
        (lambda p: p.and32(R1, 7), Instruction(0x54, dst=1, imm=7)),
        (lambda p: p.neg(R1), Instruction(0x87, dst=1)),
        (lambda p: p.neg32(R1), Instruction(0x84, dst=1)),
        (lambda p: p.movsx(R1, R2, 8), Instruction(0xBF, dst=1, src=2, off=8)),
        (lambda p: p.movsx32(R1, R2, 16), Instruction(0xBC, dst=1, src=2, off=16)),
        (lambda p: p.to_be(R1, 16), Instruction(0xDC, dst=1, imm=16)),
        (lambda p: p.to_le(R1, 64), Instruction(0xD4, dst=1, imm=64)),
        (lambda p: p.bswap(R1, 32), Instruction(0xD7, dst=1, imm=32)),
        (lambda p: p.ldx(W, R2, R6, 20), Instruction(0x61, dst=2, src=6, off=20)),
        (lambda p: p.ldxs(B, R2, R6, 3), Instruction(0x91, dst=2, src=6, off=3)),
        (lambda p: p.stx(W, R10, -4, R2), Instruction(0x63, dst=10, src=2, off=-4)),
        (lambda p: p.st(DW, R10, -16, 0), Instruction(0x7A, dst=10, off=-16)),
        (lambda p: p.st(H, R10, -2, 0xFFFF), Instruction(0x6A, dst=10, off=-2, imm=0xFFFF)),
        (lambda p: p.ld_abs(H, 12), Instruction(0x28, imm=12)),
        (lambda p: p.ld_ind(B, R3, 1), Instruction(0x50, src=3, imm=1)),
        (lambda p: p.atomic_add(DW, R0, 0, R1), Instruction(0xDB, src=1)),
        (lambda p: p.atomic_xor(W, R0, 8, R1, fetch=True), Instruction(0xC3, src=1, off=8, imm=0xA1)),
        (lambda p: p.atomic_xchg(DW, R2, 0, R1), Instruction(0xDB, dst=2, src=1, imm=0xE1)),
        (lambda p: p.atomic_cmpxchg(W, R2, 0, R1), Instruction(0xC3, dst=2, src=1, imm=0xF1)),
        (lambda p: p.ld_imm64(R3, 0x1234567890), Instruction(0x18, dst=3, imm=0x34567890, next_imm=0x12)),
        (lambda p: p.ld_imm64(R3, -1), Instruction(0x18, dst=3, imm=-1, next_imm=-1)),
        (lambda p: p.ld_map(R1, 7), Instruction(0x18, dst=1, src=1, imm=7)),
        (lambda p: p.ld_map_idx(R1, 2), Instruction(0x18, dst=1, src=5, imm=2)),
        (lambda p: p.ld_map_idx_value(R1, 2, 16), Instruction(0x18, dst=1, src=6, imm=2, next_imm=16)),
        (lambda p: p.ld_btf_id(R1, 99), Instruction(0x18, dst=1, src=3, imm=99)),
        (lambda p: p.call("map_lookup_elem"), Instruction(0x85, imm=1)),
        (lambda p: p.call("bpf_ringbuf_submit"), Instruction(0x85, imm=132)),
        (lambda p: p.call(14), Instruction(0x85, imm=14)),
        (lambda p: p.call_kfunc(1234), Instruction(0x85, src=2, imm=1234)),
        (lambda p: p.exit(), Instruction(0x95)),
    ],
)
def test_each_method_emits_its_encoding(build, expected):
    assert single(build) == expected


def test_the_documented_example_assembles():
    p = Program("count_states")
    p.mov(R6, R1)
    p.ldx(W, R2, R6, 20)
    p.stx(W, R10, -4, R2)
    p.ld_map(R1, "counts")
    p.ld_map_value(R3, "config", 8)
    p.mov(R2, R10)
    p.add(R2, -4)
    p.call("map_lookup_elem")
    p.jeq(R0, 0, "out")
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.label("out")
    p.mov(R0, 0)
    p.exit()

    code = p.assemble(maps={"counts": 7, "config": 8})

    assert p.map_names == {"counts", "config"}
    assert len(p) == 15 and len(code) == 15 * 8
    insns = decode(code)
    assert insns[3] == Instruction(0x18, dst=1, src=1, imm=7)
    assert insns[4] == Instruction(0x18, dst=3, src=2, imm=8, next_imm=8)
    assert insns[8] == Instruction(0x15, off=2)  # slot 10 skips two slots to "out" at 13


def test_labels_resolve_forward_and_backward_in_slots():
    p = Program("loop")
    p.label("top")
    p.ld_imm64(R1, 1 << 40)  # two slots
    p.jne(R1, R2, "top")
    p.ja("end")
    p.gotol("top")
    p.call_local("sub")
    p.ld_func(R2, "sub")
    p.label("end")
    p.exit()
    p.label("sub")
    p.exit()

    jne, ja, gotol, call, ld_func = p.resolve()[1:6]
    assert jne.off == -3
    assert ja.off == 4
    assert (gotol.off, gotol.imm) == (0, -5)
    assert (call.src, call.imm) == (1, 3)
    assert (ld_func.src, ld_func.imm) == (4, 2)
    assert p.labels == {"top": 0, "end": 8, "sub": 9}
    assert p.instructions[1].symbol == "top"  # the builder keeps its symbols


def test_missing_map_is_named():
    p = Program("needs_map")
    p.ld_map(R1, "counts")
    with pytest.raises(AsmError, match=r"needs_map: insn 0 .*map 'counts' has no file descriptor; given: \['other'\]"):
        p.assemble(maps={"other": 3})


def test_missing_label_is_named():
    p = Program("needs_label")
    p.mov(R0, 0)
    p.ja("nowhere")
    with pytest.raises(AsmError, match=r"needs_label: insn 1 .*label 'nowhere' is not defined"):
        p.assemble()


def test_duplicate_label_is_refused():
    p = Program("twice")
    p.label("a")
    with pytest.raises(AsmError, match="defined twice"):
        p.label("a")


def test_jump_out_of_reach_is_refused():
    p = Program("far")
    p.ja("end")
    for _ in range(1 << 15):
        p.mov(R0, 0)
    p.label("end")
    p.exit()
    with pytest.raises(AsmError, match=r"far: insn 0 .*off 32768"):
        p.assemble()
    p.gotol("end")  # imm reaches


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: p.ldx(W, R1, R2, 40000), r"bad: insn 0 ldx\(W, R1, R2, 40000\): .*off 40000"),
        (lambda p: p.mov(R1, 1 << 32), r"mov\(R1, 4294967296\): immediate 0x100000000"),
        (lambda p: p.mov(R1, 0xFFFFFFFF), "64-bit operation"),
        (lambda p: p.jeq(R1, -(1 << 31) - 1, "x"), "immediate"),
        (lambda p: p.lsh(R1, 64), "shift by 64"),
        (lambda p: p.rsh32(R1, 32), "shift by 32"),
        (lambda p: p.mov(1, R2), "dst must be a register"),
        (lambda p: p.ldxs(DW, R1, R2, 0), r"ldxs\(DW, .*sizes are B, H, W"),
        (lambda p: p.atomic_add(B, R1, 0, R2), r"atomic_add\(B, .*sizes are W, DW"),
        (lambda p: p.movsx32(R1, R2, 32), "sign-extend 32 bits into 32"),
        (lambda p: p.to_be(R1, 8), "widths"),
        (lambda p: p.call("no_such_helper"), "unknown helper 'no_such_helper'"),
        (lambda p: p.ld_imm64(R1, 1 << 64), "does not fit in 64 bits"),
        (lambda p: p.jeq(R1, 0, 5), "label must be a non-empty str"),
    ],
)
def test_bad_operands_name_the_instruction(build, message):
    with pytest.raises(AsmError, match=message):
        build(Program("bad"))


def test_emit_appends_ready_instructions():
    p = Program("raw")
    p.emit(Instruction(0x18, dst=1, imm=5))
    p.emit(Instruction(0x95))
    assert len(p) == 3
    assert decode(p.assemble()) == p.instructions


def test_decode_rejects_truncated_code():
    with pytest.raises(AsmError, match="multiple of 8"):
        decode(b"\x95\x00\x00")
    with pytest.raises(AsmError, match="second slot"):
        decode(bytes(Instruction(0x18).encode()[:8]))
