"""A tiny BTF encoder for tests: small blobs of every kind, in either byte order.

Independent of gespann.btf on purpose (plain struct.pack from the uapi layout),
so a test that parses what it builds checks the parser against the format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

KINDS = dict(
    INT=1, PTR=2, ARRAY=3, STRUCT=4, UNION=5, ENUM=6, FWD=7, TYPEDEF=8, VOLATILE=9, CONST=10,
    RESTRICT=11, FUNC=12, FUNC_PROTO=13, VAR=14, DATASEC=15, FLOAT=16, DECL_TAG=17, TYPE_TAG=18, ENUM64=19,
)


@dataclass
class BTFBuilder:
    """Types are added in order; each add returns the new type id (ids start at first_id)."""

    first_id: int = 1
    string_base: int = 0  # for split BTF: the base's total string length
    strings: bytearray = field(default_factory=lambda: bytearray(b"\0"))
    records: list = field(default_factory=list)  # (words, ) per type, words as (fmt-char, value)

    def string(self, text: str) -> int:
        if not text:
            return 0
        encoded = text.encode() + b"\0"
        at = self.strings.find(b"\0" + encoded)
        if at >= 0:
            return self.string_base + at + 1
        offset = self.string_base + len(self.strings)
        self.strings += encoded
        return offset

    def add(self, kind: str, name: str = "", *, vlen: int = 0, kind_flag: bool = False,
            size_or_type: int = 0, trailer: tuple = ()) -> int:
        info = (int(kind_flag) << 31) | (KINDS[kind] << 24) | vlen
        words = [("I", self.string(name)), ("I", info), ("I", size_or_type), *trailer]
        self.records.append(words)
        return self.first_id + len(self.records) - 1

    # -- one helper per kind ---------------------------------------------------------

    def int_(self, name: str, size: int, *, signed: bool = False, bits: int | None = None,
             offset: int = 0, encoding: int | None = None) -> int:
        enc = encoding if encoding is not None else int(signed)
        word = (enc << 24) | (offset << 16) | (bits if bits is not None else size * 8)
        return self.add("INT", name, size_or_type=size, trailer=(("I", word),))

    def ptr(self, target: int) -> int:
        return self.add("PTR", size_or_type=target)

    def array(self, elem: int, index: int, nelems: int) -> int:
        return self.add("ARRAY", trailer=(("I", elem), ("I", index), ("I", nelems)))

    def composite(self, name: str, size: int, members, *, union: bool = False, kind_flag: bool = False) -> int:
        """members: (name, type, bit_offset[, bitfield_size])."""
        trailer = []
        for m in members:
            mname, mtype, bit_offset, *bits = m
            offset = (bits[0] << 24 | bit_offset) if kind_flag else bit_offset
            trailer += [("I", self.string(mname)), ("I", mtype), ("I", offset)]
        return self.add("UNION" if union else "STRUCT", name, vlen=len(members), kind_flag=kind_flag,
                        size_or_type=size, trailer=tuple(trailer))

    def enum(self, name: str, size: int, values, *, signed: bool = False) -> int:
        trailer = []
        for vname, value in values:
            trailer += [("I", self.string(vname)), ("i", value)]
        return self.add("ENUM", name, vlen=len(values), kind_flag=signed, size_or_type=size, trailer=tuple(trailer))

    def enum64(self, name: str, size: int, values, *, signed: bool = False) -> int:
        trailer = []
        for vname, value in values:
            raw = value & (2**64 - 1)
            trailer += [("I", self.string(vname)), ("I", raw & 0xFFFFFFFF), ("I", raw >> 32)]
        return self.add("ENUM64", name, vlen=len(values), kind_flag=signed, size_or_type=size, trailer=tuple(trailer))

    def fwd(self, name: str, *, union: bool = False) -> int:
        return self.add("FWD", name, kind_flag=union)

    def typedef(self, name: str, target: int) -> int:
        return self.add("TYPEDEF", name, size_or_type=target)

    def modifier(self, kind: str, target: int) -> int:
        return self.add(kind, size_or_type=target)

    def type_tag(self, name: str, target: int, *, attribute: bool = False) -> int:
        return self.add("TYPE_TAG", name, kind_flag=attribute, size_or_type=target)

    def func_proto(self, return_type: int, params) -> int:
        trailer = []
        for pname, ptype in params:
            trailer += [("I", self.string(pname)), ("I", ptype)]
        return self.add("FUNC_PROTO", vlen=len(params), size_or_type=return_type, trailer=tuple(trailer))

    def func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add("FUNC", name, vlen=linkage, size_or_type=proto)

    def var(self, name: str, target: int, linkage: int = 1) -> int:
        return self.add("VAR", name, size_or_type=target, trailer=(("I", linkage),))

    def datasec(self, name: str, size: int, entries) -> int:
        trailer = []
        for vtype, offset, vsize in entries:
            trailer += [("I", vtype), ("I", offset), ("I", vsize)]
        return self.add("DATASEC", name, vlen=len(entries), size_or_type=size, trailer=tuple(trailer))

    def float_(self, name: str, size: int) -> int:
        return self.add("FLOAT", name, size_or_type=size)

    def decl_tag(self, name: str, target: int, component_idx: int = -1, *, attribute: bool = False) -> int:
        return self.add("DECL_TAG", name, kind_flag=attribute, size_or_type=target,
                        trailer=(("i", component_idx),))

    # -- output ----------------------------------------------------------------------

    def build(self, byteorder: str = "little") -> bytes:
        order = "<" if byteorder == "little" else ">"
        body = b"".join(struct.pack(order + c, v) for words in self.records for c, v in words)
        header = struct.pack(order + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(self.strings))
        return header + body + bytes(self.strings)


def sample_blob(byteorder: str = "little") -> tuple[bytes, dict]:
    """A small blob with every kind and the shapes field paths care about; returns (blob, ids)."""
    b = BTFBuilder()
    ids = {}
    ids["u32"] = u32 = b.int_("unsigned int", 4)
    ids["int"] = i32 = b.int_("int", 4, signed=True)
    ids["u16"] = u16 = b.int_("short unsigned int", 2)
    ids["u8"] = u8 = b.int_("unsigned char", 1)
    ids["long"] = b.int_("long int", 8, signed=True)
    ids["be16"] = be16 = b.typedef("__be16", u16)
    ids["cu32"] = cu32 = b.modifier("CONST", u32)
    ids["vcu32"] = vcu32 = b.modifier("VOLATILE", cu32)
    ids["tagged"] = tagged = b.type_tag("user", vcu32)
    ids["arr"] = arr = b.array(u32, i32, 4)
    ids["inner"] = inner = b.composite("", 4, [("lo", u16, 0), ("hi", be16, 16)])
    ids["anon_union"] = anon_union = b.composite("", 4, [("word", u32, 0), ("", inner, 0)], union=True)
    ids["bits"] = bits = b.composite("flags", 4, [("a", u8, 0, 1), ("b", u8, 1, 3), ("c", u32, 4, 20)], kind_flag=True)
    ids["sample"] = sample = b.composite("sample", 40, [
        ("first", u32, 0),
        ("", anon_union, 32),
        ("vec", arr, 64),
        ("fl", bits, 192),
        ("q", tagged, 224),
        ("p", 0, 256),  # patched below to a pointer to sample
    ])
    ids["ptr"] = ptr = b.ptr(sample)
    b.records[sample - 1][-2] = ("I", ptr)  # member p: a pointer to the struct that holds it
    ids["old_bits"] = b.composite("old_style", 4, [("x", b.int_("unsigned int", 4, bits=5, offset=3), 0)])
    ids["fwd"] = b.fwd("opaque")
    ids["enum"] = b.enum("color", 4, [("RED", 0), ("BLUE", -1)], signed=True)
    ids["enum64"] = b.enum64("big", 8, [("HUGE", 2**63 + 5), ("ONE", 1)])
    ids["float"] = b.float_("double", 8)
    ids["proto"] = proto = b.func_proto(i32, [("s", ptr), ("n", u32), ("", 0)])
    ids["func"] = b.func("sample_fn", proto, linkage=1)
    ids["var"] = var = b.var("sample_var", u32, linkage=1)
    ids["datasec"] = b.datasec(".data", 4, [(var, 0, 4)])
    ids["decl_tag"] = b.decl_tag("tagged_member", sample, 0)
    ids["typedef_sample"] = b.typedef("sample_t", sample)
    ids["restrict"] = b.modifier("RESTRICT", ptr)
    ids["btf_trace"] = b.typedef("btf_trace_sample_event", b.ptr(proto))
    return b.build(byteorder), ids
