"""Field paths to byte offsets, as C's offsetof computes them, including bitfields.

A path is member names joined by dots, each optionally indexed:
`__sk_common.skc_dport`, `rtt_min.s[0].v`, `skc_v6_daddr.in6_u.u6_addr32[3]`.
As in C, a member of an anonymous struct or union is reached by its own name.
Paths do not cross pointers: that would be a memory read, not an offset.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Optional, Union

from . import types as t
from .errors import FieldNotFound, MalformedBTF, TypeNotFound
from .kinds import Kind
from .locations import FieldLocation
from .typeinfo import MAX_DEPTH, describe, sizeof, strip_aliases, type_name

if TYPE_CHECKING:
    from .spec import Spec

_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")
_INDEX = re.compile(r"\[(\d+)\]")


def split_field(dotted: str) -> tuple[str, str]:
    """"tcp_sock.srtt_us" -> ("tcp_sock", "srtt_us")."""
    struct, dot, path = dotted.partition(".")
    if not dot or not struct or not path:
        raise FieldNotFound(f"{dotted!r} is not STRUCT.FIELD[.FIELD...]")
    return struct, path


def parse_path(path: str) -> list[tuple[str, tuple[int, ...]]]:
    """"rtt_min.s[0].v" -> [("rtt_min", ()), ("s", (0,)), ("v", ())]."""
    steps = []
    for part in path.split("."):
        match = _STEP.match(part.strip())
        if not match:
            raise FieldNotFound(f"{path!r}: {part!r} is not a member name with optional [index]es")
        steps.append((match[1], tuple(int(i) for i in _INDEX.findall(match[2]))))
    return steps


def find_composite(spec: Spec, name: str) -> t.Composite:
    """The struct or union called `name` ("struct sock", "sock", or a typedef of one)."""
    keyword, _, bare = name.strip().rpartition(" ")
    kinds = {"struct": (Kind.STRUCT,), "union": (Kind.UNION,), "": (Kind.STRUCT, Kind.UNION)}.get(keyword)
    if kinds is None:
        raise TypeNotFound(f"{name!r} is not a struct or union name")
    found = spec.find_all(bare, kinds)
    if found:
        return found[0]
    if not keyword:
        for typedef in spec.find_all(bare, Kind.TYPEDEF):
            target = strip_aliases(spec, typedef.id)
            if isinstance(target, t.Composite):
                return target
    close = spec.close_names(bare, kinds)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise TypeNotFound(f"{spec.name} has no struct or union named {bare!r}{hint}", close)


def locate(spec: Spec, struct: Union[str, t.Composite], path: str) -> FieldLocation:
    """Offset and size of the member at `path` in `struct` (a name, or a decoded struct/union)."""
    root = struct if isinstance(struct, t.Composite) else find_composite(spec, struct)
    type_id, bit_offset, bit_size = root.id, 0, 0
    walked = root.name or f"(anon {root.kind.name.lower()} [{root.id}])"
    for name, indexes in parse_path(path):
        holder = strip_aliases(spec, type_id)
        if bit_size or not isinstance(holder, t.Composite):
            raise FieldNotFound(f"{walked} is {describe(spec, type_id)}, which has no member {name!r}")
        chain = member_chain(spec, holder, name)
        if chain is None:
            close = tuple(difflib.get_close_matches(name, member_names(spec, holder), n=5, cutoff=0.6))
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise FieldNotFound(f"{walked} ({describe(spec, holder.id)}) has no member {name!r}{hint}", close)
        bit_offset += sum(m.bit_offset for m in chain)
        member = chain[-1]
        type_id, bit_size = member.type, member.bitfield_size
        if not bit_size:
            bit_offset, bit_size = _int_encoded_bitfield(spec, type_id, bit_offset)
        walked += f".{name}"
        for index in indexes:
            array = strip_aliases(spec, type_id)
            if bit_size or not isinstance(array, t.Array):
                raise FieldNotFound(f"{walked} is {describe(spec, type_id)}, not an array: cannot index [{index}]")
            if array.nelems and index >= array.nelems:
                raise FieldNotFound(f"{walked}[{index}] is out of range: the array has {array.nelems} elements")
            bit_offset += index * sizeof(spec, array.elem) * 8
            type_id = array.elem
            walked += f"[{index}]"
    size = sizeof(spec, type_id)
    if bit_size:
        offset, size = _bitfield_load(spec, bit_offset, bit_size, size)
    elif bit_offset % 8:
        raise MalformedBTF(f"{spec.name}: {walked} is not a bitfield but starts at bit {bit_offset}")
    else:
        offset = bit_offset // 8
    return FieldLocation(root.name, path, offset, size, bit_offset, bit_size, type_name(spec, type_id))


def member_chain(spec: Spec, holder: t.Composite, name: str, depth: int = 0) -> Optional[list[t.Member]]:
    """The members from `holder` down to `name`, through anonymous members; None if absent."""
    if depth > MAX_DEPTH:
        raise MalformedBTF(f"{spec.name}: anonymous members nest more than {MAX_DEPTH} deep (a cycle?)")
    for member in holder.members:
        if member.name == name:
            return [member]
        if not member.name:
            inner = strip_aliases(spec, member.type)
            if isinstance(inner, t.Composite):
                chain = member_chain(spec, inner, name, depth + 1)
                if chain is not None:
                    return [member, *chain]
    return None


def member_names(spec: Spec, holder: t.Composite, depth: int = 0) -> list[str]:
    """Every name reachable from `holder` as in C: its members and those of its anonymous members."""
    names = []
    for member in holder.members:
        if member.name:
            names.append(member.name)
        elif depth < MAX_DEPTH:
            inner = strip_aliases(spec, member.type)
            if isinstance(inner, t.Composite):
                names.extend(member_names(spec, inner, depth + 1))
    return names


def _int_encoded_bitfield(spec: Spec, type_id: int, bit_offset: int) -> tuple[int, int]:
    """Old-style bitfields (struct kind_flag 0): the member's INT type carries offset and bits."""
    typ = spec.type(type_id)
    if isinstance(typ, t.Int) and (typ.bit_offset or typ.bits != typ.size * 8):
        return bit_offset + typ.bit_offset, typ.bits
    return bit_offset, 0


def _bitfield_load(spec: Spec, bit_offset: int, bit_size: int, type_size: int) -> tuple[int, int]:
    """Smallest naturally aligned load, starting from the member type's size, that covers the bits."""
    load = type_size
    while load:
        offset = bit_offset // 8 // load * load
        if bit_offset + bit_size - offset * 8 <= load * 8:
            return offset, load
        if load >= 8:
            break
        load *= 2
    raise MalformedBTF(f"{spec.name}: bitfield of {bit_size} bits at bit {bit_offset} fits no load of up to 8 bytes")
