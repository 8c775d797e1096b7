"""What a type is underneath its aliases, how big it is, and how C spells it.

Type graphs from hostile BTF can loop (a typedef naming itself) or nest without
end, so every walk here is bounded by MAX_DEPTH and fails with MalformedBTF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import types as t
from .errors import MalformedBTF
from .kinds import Kind

if TYPE_CHECKING:
    from .spec import Spec

#: Longest chain of typedefs/qualifiers/arrays followed before giving up; real kernels need < 10.
MAX_DEPTH = 64


def strip_aliases(spec: Spec, type_id: int) -> t.Type:
    """The type behind typedefs, const, volatile, restrict and type tags."""
    for _ in range(MAX_DEPTH):
        typ = spec.type(type_id)
        if not isinstance(typ, t.ALIASES):
            return typ
        type_id = typ.type
    raise MalformedBTF(
        f"{spec.name}: type [{type_id}] is behind more than {MAX_DEPTH} typedefs or qualifiers (a cycle?)"
    )


def sizeof(spec: Spec, type_id: int) -> int:
    """Size in bytes, as C's sizeof would give it."""
    count = 1
    for _ in range(MAX_DEPTH):
        typ = strip_aliases(spec, type_id)
        if isinstance(typ, t.Array):
            count *= typ.nelems
            type_id = typ.elem
            continue
        if isinstance(typ, (t.Int, t.Composite, t.Enum, t.Float, t.Datasec)):
            return count * typ.size
        if isinstance(typ, t.Pointer):
            return count * spec.pointer_size
        raise MalformedBTF(f"{spec.name}: {describe(spec, typ.id)} [{typ.id}] has no size")
    raise MalformedBTF(f"{spec.name}: array type [{type_id}] nests more than {MAX_DEPTH} deep (a cycle?)")


def type_name(spec: Spec, type_id: int) -> str:
    """The C spelling of a type, e.g. "struct sock *", "__be32", "char[16]"."""
    return _declarator(spec, type_id, "", 0).strip()


def describe(spec: Spec, type_id: int) -> str:
    """A type for error messages: its C spelling, or its kind when it has none."""
    typ = spec.type(type_id)
    if isinstance(typ, (t.Func, t.FuncProto, t.Var, t.Datasec, t.DeclTag)):
        return f"{typ.kind.name} {typ.name!r}"
    return type_name(spec, type_id)


def _declarator(spec: Spec, type_id: int, inner: str, depth: int) -> str:
    # C declarators read inside out: build the text around `inner` as we walk to the base type.
    if depth > MAX_DEPTH:
        raise MalformedBTF(f"{spec.name}: type [{type_id}] nests more than {MAX_DEPTH} deep (a cycle?)")
    typ = spec.type(type_id)
    if isinstance(typ, t.Pointer):
        target = spec.type(typ.target)
        wrapped = f"(*{inner})" if isinstance(target, (t.Array, t.FuncProto)) else f"*{inner}"
        return _declarator(spec, typ.target, wrapped, depth + 1)
    if isinstance(typ, t.Array):
        return _declarator(spec, typ.elem, f"{inner}[{typ.nelems}]", depth + 1)
    if isinstance(typ, t.Qualifier):
        qualifier = typ.kind.name.lower()
        if isinstance(strip_aliases(spec, typ.type), t.Pointer) and not isinstance(spec.type(typ.type), t.Typedef):
            return _declarator(spec, typ.type, f"{qualifier} {inner}", depth + 1)  # char *const p
        return f"{qualifier} {_declarator(spec, typ.type, inner, depth + 1)}"  # const char *p
    if isinstance(typ, t.TypeTag):
        return _declarator(spec, typ.type, inner, depth + 1)
    if isinstance(typ, t.FuncProto):
        params = ", ".join(_declarator(spec, p.type, "", depth + 1).strip() for p in typ.params) or "void"
        if typ.variadic:
            params += ", ..."
        return _declarator(spec, typ.return_type, f"{inner}({params})", depth + 1)
    return _base_name(typ) + ("" if inner.startswith("[") else " ") + inner


def _base_name(typ: t.Type) -> str:
    name = typ.name or "(anon)"
    if typ.kind in (Kind.STRUCT, Kind.UNION):
        return f"{typ.kind.name.lower()} {name}"
    if isinstance(typ, t.Enum):
        return f"enum {name}"
    if isinstance(typ, t.Fwd):
        return f"{'union' if typ.union else 'struct'} {name}"
    if isinstance(typ, t.Void):
        return "void"
    return name
