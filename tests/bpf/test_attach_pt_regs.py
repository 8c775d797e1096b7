"""The pt_regs layout kprobe programs read arguments from: the table against the kernel's own BTF."""
import platform

import pytest

from gespann import btf
from gespann.bpf import pt_regs


def test_the_table_matches_this_kernels_btf():
    if not btf.kernel_has_btf():
        pytest.skip("this kernel has no BTF to compare with")
    from_btf = pt_regs.pt_regs_layout(lambda reg: btf.offsetof("pt_regs", reg).offset)
    assert from_btf == pt_regs.PT_REGS == (pt_regs.PT_REGS_ARG_OFFSETS, pt_regs.PT_REGS_RETURN_OFFSET)


def test_x86_64_arguments_follow_the_calling_convention():
    layout = pt_regs.pt_regs_layout(machine="x86_64")
    assert layout.args == (112, 104, 96, 88, 72, 64) and layout.ret == 80  # di si dx cx r8 r9; ax
    assert layout.arg(5) == 64
    with pytest.raises(ValueError, match="first 6"):
        layout.arg(6)


def test_an_unknown_machine_is_refused():
    with pytest.raises(ValueError, match="calling convention of sparc64"):
        pt_regs.pt_regs_layout(machine="sparc64")
    assert platform.machine() in pt_regs.ARG_REGISTERS
