"""What every tracepoint probe shares: reading record fields at the offsets tracefs gives.

A probe never hard-codes an offset: it asks the running kernel's `format` file
where each field is and how wide it is, and loads it with a matching width.
"""

from __future__ import annotations

from asm import Program, Register, Size

from ..bpf.tracefs import TracepointField, TracepointFormat

_LOAD_SIZES = {1: Size.B, 2: Size.H, 4: Size.W, 8: Size.DW}


def load_size(field: TracepointField) -> Size:
    """The load width for a scalar field (an array's element width for an array)."""
    return _LOAD_SIZES[field.element_size]


def load_field(p: Program, fmt: TracepointFormat, dst: Register, ctx: Register, name: str) -> None:
    """Emit `dst = ctx->name`, zero-extended, whatever width this kernel gives the field."""
    field = fmt.field(name)
    p.ldx(load_size(field), dst, ctx, field.offset)
