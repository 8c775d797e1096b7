"""Reading kernel struct fields from a probe, at offsets from BTF or a vendored table.

Two ways to read. Through bpf_probe_read_kernel (5.5+): works on any kernel
address, in every program type; the stack slot is zeroed first, so a read that
faults yields 0 rather than stale stack bytes. Or directly, with one load, where
the base register holds a BTF-typed pointer (`Arguments.btf_pointers`): the verifier
checks the load against the struct's BTF and the JIT makes it fault-safe (a NULL
or bad pointer reads 0, as a faulted probe read does). A load costs about a
nanosecond, a helper call twenty or more.
"""

from __future__ import annotations

from asm import DW, R1, R2, R3, R10, Program, Register, Size, Slot, W

from ...btf import FieldLocation

_LOAD_SIZES = {1: Size.B, 2: Size.H, 4: Size.W, 8: Size.DW}


def emit_read_field(p: Program, dst: Register, base: Register, field: FieldLocation, scratch: Slot,
                    direct: bool = False) -> None:
    """Emit `dst = base->field` (zero-extended; bitfields extracted), 0 if the read faults.

    `direct`: `base` holds a BTF-typed pointer to the field's struct (an argument
    of an event with `btf_pointers`, or a struct pointer loaded directly from
    one), so one load does; it clobbers nothing else. Otherwise `scratch` is a
    free 8-byte stack slot and R0-R5 are clobbered.
    `base` may be any register, `dst` any but R10.
    """
    if field.size not in _LOAD_SIZES:
        raise ValueError(f"{field.struct}.{field.path} is {field.size} bytes: too wide for a register")
    if direct:
        # A bitfield's load covers its whole storage unit, as the verifier wants (it starts at
        # or before the bitfield's first byte and ends at or after its last).
        p.ldx(_LOAD_SIZES[field.size], dst, base, field.offset)
    else:
        p.mov(R3, base)
        p.add(R3, field.offset)
        p.st(DW, R10, scratch.at(), 0)
        p.mov(R1, R10)
        p.add(R1, scratch.at())
        p.mov(R2, field.size)
        p.call("probe_read_kernel")
        p.ldx(_LOAD_SIZES[field.size], dst, R10, scratch.at())
    if field.is_bitfield:
        lshift, rshift = field.bitfield_shifts()
        p.lsh(dst, lshift)
        p.rsh(dst, rshift)


def emit_read_bytes(p: Program, base: Register, offset: int, size: int, at: int, direct: bool = False) -> None:
    """Copy `size` bytes (a multiple of 4 when `direct`) at `base` + `offset` to the stack at R10 + `at` (a
    slot's place, `slot.at("field")`): an address, a name. A fault leaves the bytes as they were
    (probe_read_kernel) or copies zeros (direct loads of a BTF pointer, in 4- or 8-byte words). Clobbers R0-R5."""
    if direct:
        word, step = (DW, 8) if size % 8 == 0 else (W, 4)
        for part in range(0, size, step):
            p.ldx(word, R1, base, offset + part)
            p.stx(word, R10, at + part, R1)
        return
    p.mov(R3, base)
    p.add(R3, offset)
    p.mov(R1, R10)
    p.add(R1, at)
    p.mov(R2, size)
    p.call("probe_read_kernel")
