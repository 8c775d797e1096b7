"""Turn one parsed type record into its types.py value, checking what it refers to.

Checks are the ones a consumer relies on: every type id a record names exists,
every string offset is inside the string section (Spec.string checks that), and
an INT's bits fit its size. Anything else is the kernel verifier's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import types as t
from .errors import MalformedBTF
from .kinds import Kind

if TYPE_CHECKING:
    from construct import Container

    from .spec import Spec


def decode_record(spec: Spec, type_id: int, rec: Container) -> t.Type:
    kind = Kind(rec.info.kind)
    name = spec.string(rec.name_off)
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise MalformedBTF(f"{spec.name}: type [{type_id}] has unsupported kind {kind.name}")
    return decoder(_Record(spec, type_id, name, rec))


class _Record:
    """A record being decoded, with helpers that validate as they read."""

    def __init__(self, spec: Spec, type_id: int, name: str, rec: Container):
        self.spec, self.id, self.name, self.rec = spec, type_id, name, rec
        self.kind_flag = bool(rec.info.kind_flag)
        self.size = rec.size_or_type

    def ref(self, type_id: int) -> int:
        if type_id >= len(self.spec):
            raise MalformedBTF(
                f"{self.spec.name}: type [{self.id}] refers to type [{type_id}], "
                f"past the last type [{len(self.spec) - 1}]"
            )
        return type_id

    def string(self, offset: int) -> str:
        return self.spec.string(offset)

    @property
    def type(self) -> int:
        return self.ref(self.rec.size_or_type)


def _int(r: _Record) -> t.Int:
    enc = r.rec.fixed
    if enc.bits > 128 or enc.offset + enc.bits > r.size * 8:
        raise MalformedBTF(
            f"{r.spec.name}: INT [{r.id}] {r.name!r} has {enc.bits} bits at offset {enc.offset} in {r.size} bytes"
        )
    return t.Int(r.id, r.name, r.size, enc.encoding, enc.offset, enc.bits)


def _array(r: _Record) -> t.Array:
    a = r.rec.fixed
    return t.Array(r.id, r.name, r.ref(a.type), r.ref(a.index_type), a.nelems)


def _composite(cls: type) -> Callable[[_Record], t.Composite]:
    def decode(r: _Record) -> t.Composite:
        members = []
        for m in r.rec.entries:
            if r.kind_flag:  # bits 24-31: bitfield size, bits 0-23: bit offset
                bit_offset, bitfield_size = m.offset & 0xFFFFFF, m.offset >> 24
            else:
                bit_offset, bitfield_size = m.offset, 0
            members.append(t.Member(r.string(m.name_off), r.ref(m.type), bit_offset, bitfield_size))
        return cls(r.id, r.name, r.size, tuple(members))

    return decode


def _enum(r: _Record) -> t.Enum:
    # btf_enum.val is declared s32; kind_flag says whether the enum is signed, else read it as u32.
    values = tuple(
        t.EnumValue(r.string(v.name_off), v.val if r.kind_flag else v.val & 0xFFFFFFFF) for v in r.rec.entries
    )
    return t.Enum(r.id, r.name, r.size, r.kind_flag, values)


def _enum64(r: _Record) -> t.Enum64:
    values = []
    for v in r.rec.entries:
        value = v.val_hi32 << 32 | v.val_lo32
        if r.kind_flag and value >= 1 << 63:
            value -= 1 << 64
        values.append(t.EnumValue(r.string(v.name_off), value))
    return t.Enum64(r.id, r.name, r.size, r.kind_flag, tuple(values))


def _func_proto(r: _Record) -> t.FuncProto:
    params = [t.Param(r.string(p.name_off), r.ref(p.type)) for p in r.rec.entries]
    variadic = bool(params) and params[-1].type == 0 and not params[-1].name
    if variadic:
        params.pop()
    return t.FuncProto(r.id, r.name, r.type, tuple(params), variadic)


def _datasec(r: _Record) -> t.Datasec:
    secinfos = tuple(t.VarSecinfo(r.ref(v.type), v.offset, v.size) for v in r.rec.entries)
    return t.Datasec(r.id, r.name, r.size, secinfos)


_DECODERS: dict[Kind, Callable[[_Record], t.Type]] = {
    Kind.INT: _int,
    Kind.PTR: lambda r: t.Pointer(r.id, r.name, r.type),
    Kind.ARRAY: _array,
    Kind.STRUCT: _composite(t.Struct),
    Kind.UNION: _composite(t.Union),
    Kind.ENUM: _enum,
    Kind.FWD: lambda r: t.Fwd(r.id, r.name, r.kind_flag),
    Kind.TYPEDEF: lambda r: t.Typedef(r.id, r.name, r.type),
    Kind.VOLATILE: lambda r: t.Volatile(r.id, r.name, r.type),
    Kind.CONST: lambda r: t.Const(r.id, r.name, r.type),
    Kind.RESTRICT: lambda r: t.Restrict(r.id, r.name, r.type),
    Kind.FUNC: lambda r: t.Func(r.id, r.name, r.type, r.rec.info.vlen),
    Kind.FUNC_PROTO: _func_proto,
    Kind.VAR: lambda r: t.Var(r.id, r.name, r.type, r.rec.fixed.linkage),
    Kind.DATASEC: _datasec,
    Kind.FLOAT: lambda r: t.Float(r.id, r.name, r.size),
    Kind.DECL_TAG: lambda r: t.DeclTag(r.id, r.name, r.type, r.rec.fixed.component_idx, r.kind_flag),
    Kind.TYPE_TAG: lambda r: t.TypeTag(r.id, r.name, r.type, r.kind_flag),
    Kind.ENUM64: _enum64,
}
