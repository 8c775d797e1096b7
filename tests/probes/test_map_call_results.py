"""A probe tests what a map update or delete returned with a 32-bit jump, never a 64-bit one.

Before 6.5 the verifier turns bpf_map_update_elem and bpf_map_delete_elem into direct calls of the
map's own operation, which returns an int: the upper half of R0 is then undefined, and a 64-bit test
of -EEXIST never matches there (5.10 and 6.1 in the matrix: a stale entry went uncounted and was kept).
This reads every built-in probe's bytecode, as this kernel builds it, for such a test.
"""
import pytest

from asm import Instruction, decode
from asm.helpers import HELPERS
from asm.opcodes import InsnClass, JmpOp
from gespann.bpf.errors import BPFError
from gespann.btf import BTFError
from gespann.probes import ALL_PROBES
from gespann.probes.toolkit.probe import BuildTarget

pytestmark = pytest.mark.root  # in the matrix too: each kernel's types build each probe its own way
RESULT_CALLS = {HELPERS["map_update_elem"], HELPERS["map_delete_elem"]}
TARGETS = {"alone": None, "every option": BuildTarget(kernel_walk=True, by_process=True, peers=True, netns=1)}


def _returns_a_result(insn: Instruction) -> bool:
    return insn.is_call and insn.imm in RESULT_CALLS


def _wide_tests_of_results(code: bytes) -> list[int]:
    """Indexes of 64-bit conditional jumps on R0 while R0 still holds a map update's or delete's result."""
    found, holding = [], False
    for index, insn in enumerate(decode(code)):
        if insn.is_call:
            holding = _returns_a_result(insn)
        elif insn.insn_class == InsnClass.JMP and insn.op in (JmpOp.JA, JmpOp.EXIT):
            holding = False  # the path goes elsewhere: a later test of R0 is about something else
        elif insn.insn_class == InsnClass.JMP:
            if holding and insn.dst == 0:
                found.append(index)
        elif insn.dst == 0 and insn.insn_class not in (InsnClass.JMP32, InsnClass.ST, InsnClass.STX):
            holding = False  # R0 written (stores and 32-bit tests write no register)
    return found


def _programs():
    for probe in ALL_PROBES:
        for flavour in probe.flavours:
            for target_name, target in TARGETS.items():
                try:
                    program = probe.program(flavour, target)
                except (BPFError, BTFError, KeyError, ValueError):
                    continue  # a flavour or an option this kernel cannot build: its matrix kernel checks it
                yield f"{probe.name} as {flavour}, {target_name}", program.assemble(
                    maps={name: 0 for name in program.map_names})


def test_no_probe_tests_a_map_call_result_with_a_64_bit_jump():
    checked, calls, wide = 0, 0, {}
    for name, code in _programs():
        checked += 1
        calls += sum(map(_returns_a_result, decode(code)))
        if found := _wide_tests_of_results(code):
            wide[name] = found
    assert checked >= len(ALL_PROBES) and calls, "no program was built: the check read nothing"
    assert not wide, f"64-bit tests of a map call's result (instruction indexes): {wide}"


@pytest.mark.parametrize("jump_class, flagged", [(InsnClass.JMP, True), (InsnClass.JMP32, False)])
def test_the_check_tells_a_64_bit_test_from_a_32_bit_one(jump_class, flagged):
    call = Instruction(InsnClass.JMP | JmpOp.CALL, imm=HELPERS["map_update_elem"])
    test = Instruction(jump_class | JmpOp.JNE, dst=0, off=1, imm=-17)
    assert bool(_wide_tests_of_results(call.encode() + test.encode())) is flagged
