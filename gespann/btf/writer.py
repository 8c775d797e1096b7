"""Writing BTF for gespann's own types: what a map whose values the kernel must understand needs.

Socket-local storage (BPF_MAP_TYPE_SK_STORAGE) is created only with BTF for
its key (a 32-bit int, by the kernel's rule) and its value. Those types are
gespann's, not the kernel's, so they are written here: a header, the type
records, the string section, in the layout include/uapi/linux/btf.h gives.
Only what such a value needs is written: a struct of unsigned integers.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

from .kinds import Kind

_MAGIC, _VERSION, _HEADER_SIZE = 0xEB9F, 1, 24
_INT_SIGNED = 1 << 24


class StorageTypes(NamedTuple):
    """A BTF blob and the ids of the map's key and value types in it."""

    blob: bytes
    key_type_id: int
    value_type_id: int


def storage_types(struct_name: str, members: Sequence[tuple[str, int, int]], size: int) -> StorageTypes:
    """BTF for a storage map: key `int`, value `struct struct_name` of `size` bytes whose members are
    unsigned integers, each (name, size in bytes: 1, 2, 4 or 8, offset in bytes)."""
    strings = _Strings()
    types = [_int("int", 4, signed=True, strings=strings)]  # [1]: the key
    width_ids = {}
    for width in sorted({width for _, width, _ in members}):
        types.append(_int(f"__u{width * 8}", width, signed=False, strings=strings))
        width_ids[width] = len(types)
    body = b"".join(struct.pack("<III", strings.add(name), width_ids[width], offset * 8)
                    for name, width, offset in members)
    types.append(struct.pack("<III", strings.add(struct_name), _info(Kind.STRUCT, len(members)), size) + body)
    type_section, string_section = b"".join(types), strings.section()
    header = struct.pack("<HBBIIIII", _MAGIC, _VERSION, 0, _HEADER_SIZE, 0, len(type_section),
                         len(type_section), len(string_section))
    return StorageTypes(header + type_section + string_section, 1, len(types))


def _info(kind: Kind, vlen: int = 0) -> int:
    return (int(kind) << 24) | vlen


def _int(name: str, size: int, *, signed: bool, strings: "_Strings") -> bytes:
    encoding = (_INT_SIGNED if signed else 0) | (size * 8)
    return struct.pack("<IIII", strings.add(name), _info(Kind.INT), size, encoding)


class _Strings:
    """The string section: offset 0 is the empty name, every other name once."""

    def __init__(self) -> None:
        self._data, self._offsets = bytearray(b"\0"), {"": 0}

    def add(self, name: str) -> int:
        if name not in self._offsets:
            self._offsets[name] = len(self._data)
            self._data += name.encode() + b"\0"
        return self._offsets[name]

    def section(self) -> bytes:
        return bytes(self._data)
