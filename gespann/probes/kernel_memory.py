"""Reading kernel struct fields from a probe, at offsets from BTF or a vendored table.

Programs other than tp_btf/fentry may not dereference kernel pointers
directly; they copy through bpf_probe_read_kernel (5.5+). The stack slot is
zeroed first, so a read that faults yields 0 rather than stale stack bytes.
"""

from __future__ import annotations

from asm import DW, R1, R2, R3, R10, Program, Register, Size

from ..btf import FieldLocation

_LOAD_SIZES = {1: Size.B, 2: Size.H, 4: Size.W, 8: Size.DW}


def emit_read_field(p: Program, dst: Register, base: Register, field: FieldLocation, scratch: int) -> None:
    """Emit `dst = base->field` (zero-extended; bitfields extracted), 0 if the read faults.

    `scratch` is a free 8-byte stack slot (negative offset from R10). Clobbers R0-R5;
    `base` may be any register, `dst` any but R10.
    """
    if field.size not in _LOAD_SIZES:
        raise ValueError(f"{field.struct}.{field.path} is {field.size} bytes: too wide for a register")
    p.mov(R3, base)
    p.add(R3, field.offset)
    p.st(DW, R10, scratch, 0)
    p.mov(R1, R10)
    p.add(R1, scratch)
    p.mov(R2, field.size)
    p.call("probe_read_kernel")
    p.ldx(_LOAD_SIZES[field.size], dst, R10, scratch)
    if field.is_bitfield:
        lshift, rshift = field.bitfield_shifts()
        p.lsh(dst, lshift)
        p.rsh(dst, rshift)
