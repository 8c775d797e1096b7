"""Record layouts: a C struct described once, for both sides of a map or ring buffer.

The eBPF program needs each field's offset and size to store it; userspace
needs to decode the same bytes. A `Record` lays its fields out as a C compiler
would (each field at a multiple of its alignment, the whole padded to the
largest alignment) and derives a little-endian `construct` Struct from it.

construct is imported only when a Struct is first wanted: it is about a
quarter of a running gespann's memory, and the hot paths decode with struct.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from .errors import AsmError
from .opcodes import Size

if TYPE_CHECKING:
    import construct


@dataclass(frozen=True)
class Scalar:
    """A fixed-size integer, aligned to its own size as on every eBPF target."""

    name: str
    size: int
    signed: bool

    def __repr__(self) -> str:
        return self.name

    @property
    def alignment(self) -> int:
        return self.size

    @property
    def construct(self) -> construct.Construct:
        import construct

        return construct.BytesInteger(self.size, signed=self.signed, swapped=True)


u8, u16, u32, u64 = (Scalar(f"u{8 * n}", n, False) for n in (1, 2, 4, 8))
s8, s16, s32, s64 = (Scalar(f"s{8 * n}", n, True) for n in (1, 2, 4, 8))


@dataclass(frozen=True)
class Array:
    """A C array; an array of u8 decodes to `bytes` (addresses, command names)."""

    element: FieldType
    length: int

    def __repr__(self) -> str:
        return f"array({self.element!r}, {self.length})"

    @property
    def size(self) -> int:
        return self.element.size * self.length

    @property
    def alignment(self) -> int:
        return self.element.alignment

    @property
    def construct(self) -> construct.Construct:
        import construct

        if self.element == u8:
            return construct.Bytes(self.length)
        return construct.Array(self.length, self.element.construct)


def array(element: FieldType, length: int) -> Array:
    """`element[length]`, as a field type."""
    if length < 1:
        raise AsmError(f"an array needs at least one element, not {length}")
    return Array(element, length)


@dataclass(frozen=True)
class Field:
    """A named member of a record, at its byte offset."""

    name: str
    type: FieldType
    offset: int

    @property
    def size(self) -> int:
        return self.type.size

    @property
    def insn_size(self) -> Size:
        """The load/store size (B, H, W, DW) that accesses this field in one instruction."""
        sizes = {size.bytes: size for size in Size}
        if not isinstance(self.type, Scalar):
            raise AsmError(f"field {self.name!r} is a {self.type!r}, not a scalar")
        return sizes[self.type.size]


class Record:
    """A C struct layout; usable as a field type to nest records."""

    def __init__(self, name: str, fields: Sequence[tuple[str, FieldType]]) -> None:
        if not fields:
            raise AsmError(f"record {name!r} has no fields")
        self.name = name
        self.alignment = max(field_type.alignment for _, field_type in fields)
        self._fields: dict[str, Field] = {}
        offset = 0
        for field_name, field_type in fields:
            if field_name in self._fields:
                raise AsmError(f"record {name!r} has two fields named {field_name!r}")
            aligned = _align(offset, field_type.alignment)
            self._fields[field_name] = Field(field_name, field_type, aligned)
            offset = aligned + field_type.size
        self.size = _align(offset, self.alignment)
        self._struct: construct.Construct | None = None
        self._parser: construct.Construct | None = None

    @property
    def struct(self) -> construct.Struct:
        """The construct Struct of this layout, made on first use: padding where the C layout has it."""
        if self._struct is None:
            import construct

            members: list[construct.Construct] = []
            offset = 0
            for field in self._fields.values():
                if field.offset > offset:
                    members.append(construct.Padding(field.offset - offset))
                members.append(field.name / field.type.construct)
                offset = field.offset + field.size
            if self.size > offset:
                members.append(construct.Padding(self.size - offset))
            self._struct = construct.Struct(*members)
        return self._struct

    def __repr__(self) -> str:
        return f"Record({self.name!r}, size={self.size})"

    @property
    def construct(self) -> construct.Construct:
        return self.struct

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self._fields.values())

    def field(self, name: str) -> Field:
        try:
            return self._fields[name]
        except KeyError:
            raise AsmError(f"record {self.name!r} has no field {name!r}; it has {list(self._fields)}") from None

    def offset(self, name: str) -> int:
        return self.field(name).offset

    def parse(self, data: bytes) -> construct.Container:
        """Decode one record from the start of `data` (trailing bytes, such as sample padding, are ignored)."""
        if len(data) < self.size:
            raise AsmError(f"record {self.name!r} needs {self.size} bytes, got {len(data)}")
        if self._parser is None:
            # construct's compiled form parses the same Container about 3x faster: records and map
            # entries are decoded by the thousand. Compiled on first use, as most Records never parse.
            self._parser = self.struct.compile()
        return self._parser.parse(data)

    def build(self, values: Mapping[str, Any]) -> bytes:
        """Encode one record; padding is zero."""
        return self.struct.build(values)


FieldType = Union[Scalar, Array, Record]


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment
