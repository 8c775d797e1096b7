"""The BTF wire format of include/uapi/linux/btf.h, declared once with construct.

A BTF blob is a header, a type section and a string section. The type section is
a run of variable-length records: a common 12-byte `btf_type`, then a trailer
that depends on the record's kind, made of a fixed part and `vlen` items. Every
record is a whole number of 32-bit words, which is what lets spec.py index the
section with a word-level scan instead of parsing it.

BTF is written in the byte order of its target, so every layout exists in both.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from construct import (
    Array,
    BitsInteger,
    BitStruct,
    ByteSwapped,
    Construct,
    Flag,
    Int8ul,
    Int16ub,
    Int16ul,
    Int32sb,
    Int32sl,
    Int32ub,
    Int32ul,
    Padding,
    Pass,
    Struct,
    Switch,
    this,
)

from .kinds import Kind

MAGIC = 0xEB9F
VERSION = 1
#: Bytes of the header fields this parser knows; newer headers may be longer (hdr_len).
HEADER_SIZE = 24

# Where a kind's trailer is: "fixed" is a struct that follows btf_type once,
# "item" one that follows it vlen times. Kinds absent here have no trailer.
_FIXED_KINDS = {Kind.INT: "int_encoding", Kind.ARRAY: "array", Kind.VAR: "var", Kind.DECL_TAG: "decl_tag"}
_ITEM_KINDS = {
    Kind.STRUCT: "member",
    Kind.UNION: "member",
    Kind.ENUM: "enum",
    Kind.FUNC_PROTO: "param",
    Kind.DATASEC: "var_secinfo",
    Kind.ENUM64: "enum64",
}


class WireFormat(NamedTuple):
    """Every BTF structure in one byte order."""

    little_endian: bool
    header: Construct
    type_record: Construct  # btf_type + the trailer its kind calls for
    int_encoding: Construct
    array: Construct
    member: Construct
    enum: Construct
    param: Construct
    var: Construct
    var_secinfo: Construct
    decl_tag: Construct
    enum64: Construct

    def words_after_common(self) -> tuple[tuple[int, int], ...]:
        """Per kind: (words of the fixed trailer, words per vlen item); drives the index scan."""
        table = []
        for kind in range(32):
            fixed = getattr(self, _FIXED_KINDS[kind]).sizeof() // 4 if kind in _FIXED_KINDS else 0
            item = getattr(self, _ITEM_KINDS[kind]).sizeof() // 4 if kind in _ITEM_KINDS else 0
            table.append((fixed, item))
        return tuple(table)


@functools.lru_cache(maxsize=2)
def wire_format(little_endian: bool) -> WireFormat:
    """The construct definitions for one byte order (built once)."""
    u16, u32, s32 = (Int16ul, Int32ul, Int32sl) if little_endian else (Int16ub, Int32ub, Int32sb)

    def word_bits(*fields):
        # A 32-bit word split into bit fields, most significant first as in the uapi comments.
        bits = BitStruct(*fields)
        return ByteSwapped(bits) if little_endian else bits

    header = Struct(
        "magic" / u16,
        "version" / Int8ul,
        "flags" / Int8ul,
        "hdr_len" / u32,
        "type_off" / u32,  # offsets are relative to the end of the header
        "type_len" / u32,
        "str_off" / u32,
        "str_len" / u32,
    )
    info = word_bits(
        "kind_flag" / Flag,
        Padding(2),
        "kind" / BitsInteger(5),
        Padding(8),
        "vlen" / BitsInteger(16),
    )
    int_encoding = word_bits(
        Padding(4),
        "encoding" / BitsInteger(4),  # INT_SIGNED | INT_CHAR | INT_BOOL
        "offset" / BitsInteger(8),  # bit offset of the value inside the int
        Padding(8),
        "bits" / BitsInteger(8),  # number of value bits
    )
    array = Struct("type" / u32, "index_type" / u32, "nelems" / u32)
    member = Struct("name_off" / u32, "type" / u32, "offset" / u32)  # see Struct decoding for kind_flag
    enum = Struct("name_off" / u32, "val" / s32)
    param = Struct("name_off" / u32, "type" / u32)
    var = Struct("linkage" / u32)
    var_secinfo = Struct("type" / u32, "offset" / u32, "size" / u32)
    decl_tag = Struct("component_idx" / s32)  # -1: the tag is on the type itself
    enum64 = Struct("name_off" / u32, "val_lo32" / u32, "val_hi32" / u32)

    named = dict(
        int_encoding=int_encoding, array=array, var=var, decl_tag=decl_tag, member=member,
        enum=enum, param=param, var_secinfo=var_secinfo, enum64=enum64,
    )
    fixed = {kind: named[name] for kind, name in _FIXED_KINDS.items()}
    items = {kind: Array(this.info.vlen, named[name]) for kind, name in _ITEM_KINDS.items()}
    type_record = Struct(
        "name_off" / u32,
        "info" / info,
        "size_or_type" / u32,  # a byte size or a type id, depending on kind
        "fixed" / Switch(this.info.kind, fixed),
        "entries" / Switch(this.info.kind, items, default=Pass),
    )
    return WireFormat(little_endian=little_endian, header=header, type_record=type_record, **named)
