"""asm.text against LLVM: our text is llvm-objdump's, our bytes are llvm-mc's.

Every valid instruction kind LLVM can express (168 kinds over all 125 valid
opcode bytes, 687 instructions at their fields' extremes) and 600 random
streams of 10-40 instructions are checked both ways; the run's summary prints
the counts.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from instruction_set import LLVM_KINDS, instructions

from asm import assemble, disassemble, encode
from asm.instruction import with_slots

pytestmark = pytest.mark.llvm

STREAMS_PER_BATCH = 10
BATCHES = 60


def check_against_llvm(llvm, batch: list) -> None:
    """objdump prints our text for our bytes, and llvm-mc and we make the same bytes of that text."""
    code = encode(batch)
    text = disassemble(code)
    ours = text.splitlines()
    theirs = llvm.disassemble(code)
    differences = [f"{insn!r}: ours {a!r}, objdump {b!r}" for insn, a, b in zip(batch, ours, theirs) if a != b]
    assert not differences, "\n".join(differences[:10])
    assert len(ours) == len(theirs) == len(batch)

    assert assemble(text) == code
    theirs_code = llvm.assemble(text)
    differences = []
    for (slot, insn), line in zip(with_slots(batch), ours):
        theirs_insn = theirs_code[slot * 8 : slot * 8 + 8 * insn.slots]
        if theirs_insn != insn.encode():
            differences.append(f"{line!r}: ours {insn.encode().hex()}, llvm-mc {theirs_insn.hex()}")
    assert not differences, "\n".join(differences[:10])
    assert theirs_code == code


def test_every_kind_agrees_with_llvm(llvm, tally):
    batch = [insn for kind in LLVM_KINDS for insn in kind.samples()]
    check_against_llvm(llvm, batch)
    tally["instruction kinds (opcode with its src/imm/off variant)"] += len(LLVM_KINDS)
    tally["distinct opcode bytes"] += len({kind.opcode for kind in LLVM_KINDS})
    tally["sampled instructions, one of each kind at each field's extremes"] += len(batch)


def test_labels_resolve_as_llvm_mc_resolves_them(llvm, tally):
    text = """
        top:
            r1 = 0x1234567890 ll
            if r1 > 0x4 goto out
            if w1 s< w2 goto top
            call sub
            goto top
            gotol out
        out:
            exit
        sub:
            r0 = 0x0
            call top
            exit
    """
    assert assemble(text) == llvm.assemble(text)
    tally["label-resolution programs"] += 1


@settings(max_examples=BATCHES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.lists(instructions(LLVM_KINDS), min_size=10, max_size=40),
                      min_size=STREAMS_PER_BATCH, max_size=STREAMS_PER_BATCH))
def test_random_streams_agree_with_llvm(llvm, tally, batch):
    check_against_llvm(llvm, [insn for stream in batch for insn in stream])
    tally["random instruction streams of 10-40 instructions"] += len(batch)
    tally["instructions in random streams"] += sum(map(len, batch))
