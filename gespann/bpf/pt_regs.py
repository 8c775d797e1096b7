"""Where a kprobe program finds the probed function's arguments and return value.

A kprobe's context is `struct pt_regs`, the CPU's registers as the kprobe
saved them, and the calling convention says which register holds what: on
x86-64 the arguments arrive in di, si, dx, cx, r8, r9 and the return value
leaves in ax. The offsets below are the kernel's pt_regs layout, which has
not changed in years; where the kernel has BTF the probe layer can derive
them from it instead, with `pt_regs_layout(resolve)`. gespann.bpf itself
does not read BTF.
"""
from __future__ import annotations

import platform
from typing import Callable, NamedTuple, Optional

#: The pt_regs members holding a function's arguments, in order, and its return value.
ARG_REGISTERS = {
    "x86_64": ("di", "si", "dx", "cx", "r8", "r9"),
    "aarch64": tuple(f"regs[{n}]" for n in range(8)),
}
RETURN_REGISTER = {"x86_64": "ax", "aarch64": "regs[0]"}

#: Byte offsets in the kernel's struct pt_regs.
_X86_64 = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
           "orig_ax", "ip", "cs", "flags", "sp", "ss")
OFFSETS = {
    "x86_64": {name: 8 * n for n, name in enumerate(_X86_64)},
    "aarch64": {f"regs[{n}]": 8 * n for n in range(31)},
}


class PtRegsLayout(NamedTuple):
    """Offsets in pt_regs of a function's arguments (first to last) and of its return value."""
    args: tuple[int, ...]
    ret: int

    def arg(self, n: int) -> int:
        """The offset of argument `n`, counted from 0."""
        if not 0 <= n < len(self.args):
            raise ValueError(f"argument {n}: a kprobe sees the first {len(self.args)} in registers")
        return self.args[n]


def pt_regs_layout(resolve: Optional[Callable[[str], int]] = None, machine: Optional[str] = None) -> PtRegsLayout:
    """The layout for `machine` (this one by default): each register's offset from `resolve`
    (say, `lambda reg: btf.offsetof("pt_regs", reg).offset`), or from the table above."""
    machine = machine or platform.machine()
    if machine not in ARG_REGISTERS:
        raise ValueError(f"gespann does not know the calling convention of {machine}")
    offset = resolve or OFFSETS[machine].__getitem__
    return PtRegsLayout(tuple(offset(reg) for reg in ARG_REGISTERS[machine]), offset(RETURN_REGISTER[machine]))


#: This machine's layout, from the table.
PT_REGS = pt_regs_layout()
PT_REGS_ARG_OFFSETS = PT_REGS.args
PT_REGS_RETURN_OFFSET = PT_REGS.ret
