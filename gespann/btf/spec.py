"""A parsed BTF blob: types by id and by name, decoded only when asked for.

Opening the kernel's 5-6 MB BTF must be cheap, so a Spec does one word-level
pass over the type section to record where each record starts (a compact
array, 4 bytes per type) and nothing else. Records are decoded one at a time,
on demand, and memoized. The name index is built on the first lookup by name.

Split BTF (kernel modules) continues a base Spec: its type ids start after the
base's last id and its string offsets after the end of the base's strings.
"""

from __future__ import annotations

import difflib
import functools
import sys
from array import array
from typing import Collection, Iterable, Iterator, Optional, Union

from construct import ConstructError

from . import types as t
from .decode import decode_record
from .errors import MalformedBTF, TypeNotFound
from .kinds import Kind
from .wire import HEADER_SIZE, MAGIC, VERSION, WireFormat, wire_format

KindFilter = Union[Kind, Collection[Kind], None]

_COMMON_WORDS = 3  # name_off, info, size_or_type
_LAST_KIND = max(Kind)
_KIND_MASK = 0x1F  # info bits 24-28
_UNUSED_INFO_BITS = 0x60  # info bits 29-30 must be zero
_INVALID = 1 << 40  # a record "size" that jumps past any type section
#: Names C gives `long`: BTF has no pointer size, but long is pointer-sized on Linux.
LONG_NAMES = ("long int", "long unsigned int", "long", "unsigned long")
#: Linear passes over the types for name lookups before a sorted index pays for itself.
_PASSES_BEFORE_INDEX = 3


class Spec:
    """One BTF blob (vmlinux, a module, a raw file), optionally split on top of a base."""

    def __init__(self, data: bytes, *, base: Optional[Spec] = None, name: str = "BTF"):
        self.name = name
        self.base = base
        self._data = bytes(data)
        self.little_endian = _byte_order(self._data, name)
        self._layouts = wire_format(self.little_endian)
        self._types_at, self._types_len, self._strings_at, self._strings_len = self._sections()
        self.first_id = len(base) if base is not None else 1
        # Global string offsets of this blob start where the base's end (libbpf: start_str_off).
        self._string_base = base._string_end if base is not None else 0
        self._string_end = self._string_base + self._strings_len
        self._words = self._type_words()
        self._offsets = self._scan()
        self._decoded: dict[int, t.Type] = {}
        self._named: dict[str, tuple[int, ...]] = {}
        self._name_passes = 0
        self._names: Optional[tuple[array, array]] = None  # (name offset per type, types by name offset)
        self._pointer_size: Optional[int] = None

    # -- layout of the blob ----------------------------------------------------------

    def _sections(self) -> tuple[int, int, int, int]:
        data, name = self._data, self.name
        hdr = self._layouts.header.parse(data[:HEADER_SIZE])
        if hdr.version != VERSION:
            raise MalformedBTF(f"{name}: BTF version {hdr.version}, expected {VERSION}")
        if not HEADER_SIZE <= hdr.hdr_len <= len(data):
            raise MalformedBTF(f"{name}: header length {hdr.hdr_len} outside [{HEADER_SIZE}, {len(data)}]")
        body = len(data) - hdr.hdr_len
        for what, off, size in (("type", hdr.type_off, hdr.type_len), ("string", hdr.str_off, hdr.str_len)):
            if off + size > body:
                raise MalformedBTF(f"{name}: {what} section [{off}, {off + size}) runs past the data ({body} bytes)")
        if hdr.type_off % 4 or hdr.type_len % 4:
            raise MalformedBTF(f"{name}: type section is not 4-byte aligned")
        if hdr.type_off < hdr.str_off + hdr.str_len and hdr.str_off < hdr.type_off + hdr.type_len:
            raise MalformedBTF(f"{name}: type and string sections overlap")
        strings_at = hdr.hdr_len + hdr.str_off
        strings = data[strings_at : strings_at + hdr.str_len]
        if self.base is None and (not strings or strings[0] != 0):
            raise MalformedBTF(f"{name}: string section does not start with the empty string")
        if strings and strings[-1] != 0:
            raise MalformedBTF(f"{name}: string section is not NUL-terminated")
        return hdr.hdr_len + hdr.type_off, hdr.type_len, strings_at, hdr.str_len

    def _type_words(self) -> Union[memoryview, array]:
        """The type section as native 32-bit words (byte-swapped when the blob is foreign)."""
        section = memoryview(self._data)[self._types_at : self._types_at + self._types_len]
        if self.little_endian == (sys.byteorder == "little"):
            return section.cast("I")
        words = array("I", section.tobytes())
        words.byteswap()
        return words

    def _scan(self) -> array:
        """Word offset of every record in the type section: the only eager pass over it.

        The hot loop looks the record size up by the info word's top byte (kind,
        kind_flag and the unused bits together), which is where the time goes in
        pure Python. Invalid top bytes map to a size past any section, so a bad
        record ends the loop and is diagnosed after it.
        """
        words, offsets = self._words, array("I")
        append, n, i = offsets.append, len(words), 0
        fixed, per_item = _record_sizes_by_top_byte(self._layouts)
        try:
            while i < n:
                append(i)
                info = words[i + 1]
                top = info >> 24
                i += fixed[top] + (info & 0xFFFF) * per_item[top]
        except IndexError:
            i = n + 1
        if i != n:
            last = self.first_id + len(offsets) - 1
            top = words[offsets[-1] + 1] >> 24 if offsets[-1] + 1 < n else 0
            if fixed[top] == _INVALID:
                raise MalformedBTF(f"{self.name}: type [{last}] has an invalid kind or info word (top byte {top:#x})")
            raise MalformedBTF(f"{self.name}: type [{last}] runs past the end of the type section")
        return offsets

    # -- types by id -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of type ids, counting void and the base's types: valid ids are 0..len-1."""
        return self.first_id + len(self._offsets)

    def ids(self, kind: KindFilter = None) -> Iterator[int]:
        """This blob's own type ids (not its base's), optionally only of some kinds."""
        kinds = _kinds(kind)
        for type_id in range(self.first_id, len(self)):
            if kinds is None or self.kind_of(type_id) in kinds:
                yield type_id

    def kind_of(self, type_id: int) -> Kind:
        """A type's kind, read from its record without decoding it."""
        if type_id == 0:
            return Kind.UNKN
        if type_id < self.first_id and self.base is not None:
            return self.base.kind_of(type_id)
        return Kind(self._words[self._offset(type_id) + 1] >> 24 & 0x1F)

    def name_of(self, type_id: int) -> str:
        """A type's name, read from its record without decoding it."""
        if type_id == 0:
            return ""
        if type_id < self.first_id and self.base is not None:
            return self.base.name_of(type_id)
        return self.string(self._words[self._offset(type_id)])

    def type(self, type_id: int) -> t.Type:
        decoded = self._decoded.get(type_id)
        if decoded is not None:
            return decoded
        if type_id == 0:
            return t.VOID
        if 0 < type_id < self.first_id and self.base is not None:
            return self.base.type(type_id)
        start = self._offset(type_id)
        index = type_id - self.first_id + 1
        end = self._offsets[index] if index < len(self._offsets) else len(self._words)
        record = self._data[self._types_at + start * 4 : self._types_at + end * 4]
        try:
            parsed = self._layouts.type_record.parse(record)
        except ConstructError as err:
            raise MalformedBTF(f"{self.name}: type [{type_id}] cannot be parsed: {err}") from None
        decoded = decode_record(self, type_id, parsed)
        self._decoded[type_id] = decoded
        return decoded

    def _offset(self, type_id: int) -> int:
        index = type_id - self.first_id
        if not 0 <= index < len(self._offsets):
            raise TypeNotFound(f"{self.name} has no type id {type_id} (ids end at {len(self) - 1})")
        return self._offsets[index]

    # -- strings ---------------------------------------------------------------------

    def string(self, offset: int) -> str:
        if offset < self._string_base and self.base is not None:
            return self.base.string(offset)
        local = offset - self._string_base
        if not 0 <= local < self._strings_len:
            raise MalformedBTF(f"{self.name}: string offset {offset} is outside the string section")
        start = self._strings_at + local
        end = self._data.find(b"\0", start, self._strings_at + self._strings_len)
        return self._data[start:end].decode("utf-8", "replace")

    def _string_offsets(self, needle: bytes) -> list[int]:
        """Global offsets of every string equal to needle (a name plus its NUL), base included.

        Every occurrence counts, not only those after a NUL: a name may share its
        bytes with the tail of a longer string.
        """
        found = self.base._string_offsets(needle) if self.base is not None else []
        section_end = self._strings_at + self._strings_len
        at = self._data.find(needle, self._strings_at, section_end)
        while at >= 0:
            found.append(at - self._strings_at + self._string_base)
            at = self._data.find(needle, at + 1, section_end)
        return found

    # -- types by name ---------------------------------------------------------------

    def ids_named(self, name: str) -> list[int]:
        """Ids of every type called `name`, in id order, base types first."""
        return self.lookup_names((name,))[name]

    def lookup_names(self, names: Iterable[str]) -> dict[str, list[int]]:
        """ids_named for many names at once: one pass over the types serves them all.

        Answers are memoized. A Spec asked for names again and again builds a
        sorted name index instead (a few tens of ms), after which lookups are
        binary searches.
        """
        names = tuple(names)
        pending = {name for name in names if name not in self._named}
        if pending:
            base = self.base.lookup_names(pending) if self.base is not None else {}
            found: dict[str, list[int]] = {name: list(base.get(name, ())) for name in pending}
            wanted = {}
            for name in pending:
                if name:
                    for offset in self._string_offsets(name.encode() + b"\0"):
                        wanted[offset] = found[name]
            if wanted:
                for index, name_off in self._types_named(wanted):
                    wanted[name_off].append(self.first_id + index)
            for name, ids in found.items():
                self._named[name] = tuple(sorted(ids))
        return {name: list(self._named[name]) for name in names}

    def _types_named(self, wanted: Collection[int]) -> Iterator[tuple[int, int]]:
        """(own type index, name offset) of the types whose name offset is in `wanted`."""
        self._name_passes += 1
        if self._names is None and self._name_passes > _PASSES_BEFORE_INDEX:
            words = self._words
            names = array("I", map(words.__getitem__, self._offsets))
            self._names = names, array("I", sorted(range(len(names)), key=names.__getitem__))
        if self._names is not None:
            names, order = self._names
            for name_off in wanted:
                lo, hi = _equal_range(names, order, name_off)
                yield from ((order[k], name_off) for k in range(lo, hi))
            return
        words = self._words
        for index, offset in enumerate(self._offsets):
            if words[offset] in wanted:
                yield index, words[offset]

    def find(self, name: str, kind: KindFilter = None) -> t.Type:
        """The first type (lowest id) called `name` of one of the given kinds, as libbpf picks it."""
        kinds = _kinds(kind)
        for type_id in self.ids_named(name):
            if kinds is None or self.kind_of(type_id) in kinds:
                return self.type(type_id)
        wanted = "/".join(k.name for k in sorted(kinds)) if kinds else "type"
        close = self.close_names(name, kinds)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise TypeNotFound(f"{self.name} has no {wanted} named {name!r}{hint}", close)

    def find_all(self, name: str, kind: KindFilter = None) -> list[t.Type]:
        kinds = _kinds(kind)
        return [self.type(i) for i in self.ids_named(name) if kinds is None or self.kind_of(i) in kinds]

    def close_names(self, name: str, kind: KindFilter = None, limit: int = 5) -> tuple[str, ...]:
        """Names of that kind that look like `name`: slow (reads every name), for error messages."""
        kinds = _kinds(kind)
        names = set()
        spec: Optional[Spec] = self
        while spec is not None:
            names.update(spec.name_of(i) for i in spec.ids(kinds))
            spec = spec.base
        names.discard("")
        return tuple(difflib.get_close_matches(name, names, n=limit, cutoff=0.6))

    # -- target facts ----------------------------------------------------------------

    @property
    def pointer_size(self) -> int:
        """Bytes in a pointer: BTF does not say, so infer it from `long` as libbpf does (default 8)."""
        if self._pointer_size is None:
            self._pointer_size = 8
            for ids in self.lookup_names(LONG_NAMES).values():
                ints = [i for i in ids if self.kind_of(i) == Kind.INT]
                if ints:
                    self._pointer_size = self.type(ints[0]).size
                    break
        return self._pointer_size

    def __repr__(self) -> str:
        split = f", split on {self.base.name}" if self.base is not None else ""
        return f"<Spec {self.name}: types {self.first_id}..{len(self) - 1}{split}>"


def _byte_order(data: bytes, name: str) -> bool:
    """True for little-endian BTF, from the magic's byte order."""
    if len(data) < HEADER_SIZE:
        raise MalformedBTF(f"{name}: {len(data)} bytes is shorter than a BTF header")
    magic = int.from_bytes(data[:2], "little")
    if magic == MAGIC:
        return True
    if magic == int.from_bytes(MAGIC.to_bytes(2, "little"), "big"):
        return False
    raise MalformedBTF(f"{name}: bad magic {magic:#06x}, not BTF")


@functools.lru_cache(maxsize=2)
def _record_sizes_by_top_byte(layouts: WireFormat) -> tuple[list[int], list[int]]:
    """Words of a record, as fixed + vlen * per_item, indexed by the top byte of its info word."""
    sizes = layouts.words_after_common()
    fixed, per_item = [_INVALID] * 256, [0] * 256
    for top in range(256):
        kind, unused = top & _KIND_MASK, top & _UNUSED_INFO_BITS
        if 0 < kind <= _LAST_KIND and not unused:
            fixed[top] = _COMMON_WORDS + sizes[kind][0]
            per_item[top] = sizes[kind][1]
    return fixed, per_item


def _kinds(kind: KindFilter) -> Optional[frozenset[Kind]]:
    if kind is None:
        return None
    if isinstance(kind, Kind):
        return frozenset((kind,))
    return frozenset(kind)


def _equal_range(names: array, order: array, value: int) -> tuple[int, int]:
    """[lo, hi) of the positions in `order` whose name offset equals value (binary search)."""
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if names[order[mid]] < value:
            lo = mid + 1
        else:
            hi = mid
    end = lo
    while end < len(order) and names[order[end]] == value:
        end += 1
    return lo, end
