"""A probe tests what a map update or delete returned with a 32-bit jump, never a 64-bit one.

Before 6.5 the verifier turns bpf_map_update_elem and bpf_map_delete_elem into direct calls of the
map's own operation, which returns an int: the upper half of R0 is then undefined, and a 64-bit test
of -EEXIST never matches there (5.10 and 6.1 in the matrix: a stale entry went uncounted and was kept).
This reads every built-in probe's bytecode, as this kernel builds it, for such a test.
"""
import struct

import pytest

from asm.helpers import HELPERS
from gespann.bpf.errors import BPFError
from gespann.btf import BTFError
from gespann.probes import ALL_PROBES
from gespann.probes.toolkit.probe import BuildTarget

pytestmark = pytest.mark.root  # in the matrix too: each kernel's types build each probe its own way
RESULT_CALLS = {HELPERS["map_update_elem"], HELPERS["map_delete_elem"]}
CALL, LD_IMM64 = 0x85, 0x18
JMP, JMP32 = 0x05, 0x06
UNCONDITIONAL = {0x00, 0x80, 0x90}  # ja, call, exit: the jump op's upper four bits
TARGETS = {"alone": None, "every option": BuildTarget(kernel_walk=True, by_process=True, peers=True, netns=1)}


def _instructions(code: bytes):
    """(opcode, dst, imm) of each instruction; the second half of a 64-bit load is skipped."""
    at = 0
    while at < len(code):
        opcode, regs, _, imm = struct.unpack_from("<BBhi", code, at)
        yield opcode, regs & 0x0F, imm
        at += 16 if opcode == LD_IMM64 else 8


def _wide_tests_of_results(code: bytes) -> list[int]:
    """Indexes of 64-bit conditional jumps on R0 while R0 still holds a map update's or delete's result."""
    found, holding = [], False
    for index, (opcode, dst, imm) in enumerate(_instructions(code)):
        op_class = opcode & 0x07
        if opcode == CALL:
            holding = imm in RESULT_CALLS
        elif op_class == JMP and (opcode & 0xF0) not in UNCONDITIONAL:
            if holding and dst == 0:
                found.append(index)
        elif op_class == JMP and (opcode & 0xF0) in (0x00, 0x90):
            holding = False  # the path goes elsewhere: a later test of R0 is about something else
        elif dst == 0 and op_class not in (JMP, JMP32, 0x02, 0x03):  # writes R0 (stores, class 2 and 3, do not)
            holding = False
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
        calls += sum(opcode == CALL and imm in RESULT_CALLS for opcode, _, imm in _instructions(code))
        if found := _wide_tests_of_results(code):
            wide[name] = found
    assert checked >= len(ALL_PROBES) and calls, "no program was built: the check read nothing"
    assert not wide, f"64-bit tests of a map call's result (instruction indexes): {wide}"


@pytest.mark.parametrize("jump, flagged", [(0x55, True), (0x56, False)])  # jne (64-bit), jne32
def test_the_check_tells_a_64_bit_test_from_a_32_bit_one(jump, flagged):
    call = struct.pack("<BBhi", CALL, 0, 0, HELPERS["map_update_elem"])
    test = struct.pack("<BBhi", jump, 0, 1, -17)
    assert bool(_wide_tests_of_results(call + test)) is flagged
