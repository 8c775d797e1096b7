"""What resolving kernel types produces: where a field is, how a function is called.

These values outlive the BTF they came from (the disk cache and the vendored
tables store them), so they hold plain numbers and C spellings, never type ids
of a Spec, except the attach ids that the kernel itself asks for. Named tuples,
like the types, because a warm start imports this module and nothing heavier.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple


class FieldLocation(NamedTuple):
    """Where a field lives in its struct: read `size` bytes at `offset`.

    For a bitfield, offset and size describe the smallest aligned load that holds
    it (as libbpf's CO-RE computes it); bit_offset and bit_size say which bits.
    bit_offset always counts from the start of the struct; bit_size is 0 for an
    ordinary field.
    """

    struct: str
    path: str
    offset: int
    size: int
    bit_offset: int
    bit_size: int
    type: str

    @property
    def is_bitfield(self) -> bool:
        return self.bit_size != 0

    def bitfield_shifts(self, little_endian: bool = True) -> tuple[int, int]:
        """(lshift, rshift) that extract a bitfield from the `size`-byte load held in a u64."""
        if little_endian:
            lshift = 64 - (self.bit_offset + self.bit_size - self.offset * 8)
        else:
            lshift = (self.bit_offset - self.offset * 8) + (8 - self.size) * 8
        return lshift, 64 - self.bit_size

    def as_dict(self) -> dict:
        """For JSON output (gespann btf offsetof --json)."""
        return self._asdict()

    def __str__(self) -> str:
        where = f"offset {self.offset} (0x{self.offset:x}), size {self.size}"
        if self.is_bitfield:
            where += f", bits {self.bit_offset}+{self.bit_size}"
        return f"{self.struct}.{self.path}: {where}, type {self.type}"


class FuncParam(NamedTuple):
    name: str
    type: str  # C spelling, e.g. "struct sock *"


class FuncSignature(NamedTuple):
    """A FUNC and its prototype: the attach_btf_id for fentry and the argument list."""

    name: str
    btf_id: int
    return_type: str
    params: Tuple[FuncParam, ...]
    variadic: bool = False

    def __str__(self) -> str:
        params = ", ".join(f"{p.type} {p.name}".replace("* ", "*") for p in self.params) or "void"
        if self.variadic:
            params += ", ..."
        return f"{self.return_type} {self.name}({params}) [btf id {self.btf_id}]"
