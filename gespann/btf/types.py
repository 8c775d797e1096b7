"""Decoded BTF types: one small immutable value per kind.

References to other types are type ids, not objects, so decoding stays lazy:
a Spec decodes a record only when something asks for it. The values are named
tuples because a cold start creates many of them and imports this module every
time (named tuples cost a tenth of frozen dataclasses to define). Kinds of the
same shape share a base class: Composite, Qualifier, Enum. Every type has `id`,
`name` and a class-level `kind`.
"""

from __future__ import annotations

import typing
from typing import NamedTuple, Tuple

from .kinds import INT_BOOL, INT_CHAR, INT_SIGNED, Kind


class Void(NamedTuple):
    """Type id 0: `void`, never stored in the type section."""

    id: int
    name: str
    kind = Kind.UNKN


class Int(NamedTuple):
    id: int
    name: str
    size: int
    encoding: int  # INT_SIGNED | INT_CHAR | INT_BOOL
    bit_offset: int  # only non-zero in old-style bitfield encodings
    bits: int
    kind = Kind.INT

    @property
    def signed(self) -> bool:
        return bool(self.encoding & INT_SIGNED)

    @property
    def is_char(self) -> bool:
        return bool(self.encoding & INT_CHAR)

    @property
    def is_bool(self) -> bool:
        return bool(self.encoding & INT_BOOL)


class Pointer(NamedTuple):
    id: int
    name: str
    target: int
    kind = Kind.PTR


class Array(NamedTuple):
    id: int
    name: str
    elem: int
    index: int
    nelems: int
    kind = Kind.ARRAY


class Member(NamedTuple):
    """A struct or union member; bitfield_size is 0 for an ordinary member."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int


class Composite(NamedTuple):
    """What structs and unions share."""

    id: int
    name: str
    size: int
    members: Tuple[Member, ...]


class Struct(Composite):
    __slots__ = ()
    kind = Kind.STRUCT


class Union(Composite):
    __slots__ = ()
    kind = Kind.UNION


class EnumValue(NamedTuple):
    name: str
    value: int


class Enum(NamedTuple):
    id: int
    name: str
    size: int
    signed: bool
    values: Tuple[EnumValue, ...]
    kind = Kind.ENUM


class Enum64(Enum):
    __slots__ = ()
    kind = Kind.ENUM64


class Fwd(NamedTuple):
    """A declared but not defined struct or union (`struct foo;`)."""

    id: int
    name: str
    union: bool
    kind = Kind.FWD


class Typedef(NamedTuple):
    id: int
    name: str
    type: int
    kind = Kind.TYPEDEF


class Qualifier(NamedTuple):
    """A type that only qualifies another: const, volatile, restrict."""

    id: int
    name: str
    type: int


class Volatile(Qualifier):
    __slots__ = ()
    kind = Kind.VOLATILE


class Const(Qualifier):
    __slots__ = ()
    kind = Kind.CONST


class Restrict(Qualifier):
    __slots__ = ()
    kind = Kind.RESTRICT


class TypeTag(NamedTuple):
    """`__attribute__((btf_type_tag(name)))`; attribute is set for a plain type attribute."""

    id: int
    name: str
    type: int
    attribute: bool
    kind = Kind.TYPE_TAG


class Func(NamedTuple):
    """A function: linkage 0 static, 1 global, 2 extern; proto is its FuncProto."""

    id: int
    name: str
    proto: int
    linkage: int
    kind = Kind.FUNC


class Param(NamedTuple):
    name: str
    type: int


class FuncProto(NamedTuple):
    id: int
    name: str
    return_type: int
    params: Tuple[Param, ...]
    variadic: bool  # the last parameter was `...` (stored as an unnamed void parameter)
    kind = Kind.FUNC_PROTO


class Var(NamedTuple):
    id: int
    name: str
    type: int
    linkage: int
    kind = Kind.VAR


class VarSecinfo(NamedTuple):
    type: int
    offset: int
    size: int


class Datasec(NamedTuple):
    id: int
    name: str
    size: int
    vars: Tuple[VarSecinfo, ...]
    kind = Kind.DATASEC


class Float(NamedTuple):
    id: int
    name: str
    size: int
    kind = Kind.FLOAT


class DeclTag(NamedTuple):
    """A tag on a declaration; component_idx -1 tags the type, k >= 0 its k-th member or parameter."""

    id: int
    name: str
    type: int
    component_idx: int
    attribute: bool
    kind = Kind.DECL_TAG


Type = typing.Union[
    Void, Int, Pointer, Array, Composite, Enum, Fwd, Typedef, Qualifier, TypeTag,
    Func, FuncProto, Var, Datasec, Float, DeclTag,
]

#: Types that only rename or qualify another: what strip_aliases looks through.
ALIASES = (Typedef, Qualifier, TypeTag)

VOID = Void(id=0, name="")
