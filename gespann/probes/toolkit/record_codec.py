"""A map codec for a `Record`: values parse into named tuples with struct, build from those or mappings.

Collections read whole maps (every flow, every owner), so parsing is the hot
path: construct took about 25 µs an entry, struct well under one. The struct
format is derived from the record's own layout (fields, their offsets and the
padding between), so the two cannot drift apart.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any, Mapping, Union

from asm import Record
from asm.record import Array, Scalar, u8

_SCALAR_CODES = {(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
                 (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q"}


def struct_format(record: Record) -> str:
    """The native-order struct format of `record`: scalars, byte arrays (as bytes), and padding."""
    codes, offset = ["="], 0
    for field in record.fields:
        if field.offset > offset:
            codes.append(f"{field.offset - offset}x")
        if isinstance(field.type, Scalar):
            codes.append(_SCALAR_CODES[(field.type.size, field.type.signed)])
        elif isinstance(field.type, Array) and field.type.element == u8:
            codes.append(f"{field.type.length}s")
        else:
            raise TypeError(f"{record.name}.{field.name}: only scalars and byte arrays parse with struct")
        offset = field.offset + field.size
    if record.size > offset:
        codes.append(f"{record.size - offset}x")
    return "".join(codes)


class RecordCodec:
    """Parses `record` into a named tuple of its fields; builds from such a tuple or a mapping."""

    def __init__(self, record: Record):
        self.record = record
        self._struct = struct.Struct(struct_format(record))
        self.tuple = namedtuple(record.name, [field.name for field in record.fields])

    def build(self, obj: Union[tuple, Mapping[str, Any]]) -> bytes:
        if isinstance(obj, self.tuple):
            return self._struct.pack(*obj)
        try:
            return self._struct.pack(*(obj[name] for name in self.tuple._fields))
        except KeyError as missing:
            raise ValueError(f"{self.record.name}: no value for field {missing}") from None

    def parse(self, data: bytes):
        return self.tuple._make(self._struct.unpack(data))

    def unpack_from(self, data: bytes, offset: int = 0) -> tuple:
        """The fields of the record at `offset` in `data`, as a plain tuple in the record's order: for a
        hot path that unpacks them into locals."""
        return self._struct.unpack_from(data, offset)

    def sizeof(self) -> int:
        return self.record.size
