"""The manifest resolved for one kernel, and its JSON form (disk cache and vendored tables).

This module must stay cheap to import: a warm start (cache hit) or a vendored
table never loads the BTF parser.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple, Optional

from . import missing
from .errors import FieldNotFound, MalformedBTF, TypeNotFound
from .locations import FieldLocation, FuncParam, FuncSignature
from .manifest import ENUMS, FIELDS, KINDS, NO_NEEDS, KernelNeeds

#: Version of the JSON layout below; bump it when the layout changes. 2 added enums.
FORMAT = 2
#: A document without the BTF-only sections (funcs, tracepoints, enums): a vendored table. Its layout has
#: not changed since format 1, so tables are still written, and read, as format 1.
TABLE_FORMAT = 1


class KernelTypes(NamedTuple):
    """Field offsets, attach targets and enum names of one kernel, keyed as in manifest.py.

    A None value means "absent on this kernel". funcs and tracepoints are empty
    when the types came from a vendored table: without kernel BTF there is no
    fentry or tp_btf to attach to. enums (value -> enumerator name, as BTF spells
    it) are empty then too: a table does not carry them, and a probe reports
    such values as numbers.

    A name looked up that is not there says what is missing from where
    (missing.py): absent from the kernel's BTF, not declared by any probe, or
    beyond what a vendored table carries.
    """

    release: str
    machine: str
    little_endian: bool
    source: str  # where the types came from, for logs: a BTF path, a table, the cache
    fields: Mapping[str, Optional[FieldLocation]]
    funcs: Mapping[str, Optional[FuncSignature]] = {}  # never mutated: a shared empty default is safe
    tracepoints: Mapping[str, Optional[int]] = {}  # btf_trace_* typedef ids
    enums: Mapping[str, Optional[Mapping[int, str]]] = {}  # enum name -> {value: enumerator name}
    #: The BTF file these types were resolved from; None for a vendored table. Not kept in JSON.
    btf: Optional[str] = None
    #: What probes declared beyond the manifest (Probe(kernel=...)), by probe name, for messages. Not kept in JSON.
    needs: Mapping[str, KernelNeeds] = {}

    def field(self, key: str) -> FieldLocation:
        """The location of a manifest or declared field ("tcp_sock.srtt_us"); FieldNotFound if this kernel
        lacks it."""
        location = self.optional_field(key)
        if location is None:
            raise FieldNotFound(missing.absent(self, "field", key))
        return location

    def optional_field(self, key: str) -> Optional[FieldLocation]:
        """The location of a manifest or declared field, or None if this kernel lacks it."""
        if key in self.fields:
            return self.fields[key]
        raise missing.not_resolved(self, "field", key)

    def offset(self, key: str) -> int:
        return self.field(key).offset

    def func(self, name: str) -> FuncSignature:
        """A manifest or declared function's BTF id and parameters; TypeNotFound if this kernel lacks it."""
        if name not in self.funcs:
            raise missing.not_resolved(self, "function", name)
        found = self.funcs[name]
        if found is None:
            raise TypeNotFound(missing.absent(self, "function", name))
        return found

    def tracepoint_id(self, name: str) -> int:
        """The id of a manifest or declared tracepoint's btf_trace_<name>; TypeNotFound if this kernel lacks it."""
        if name not in self.tracepoints:
            raise missing.not_resolved(self, "tracepoint", name)
        found = self.tracepoints[name]
        if found is None:
            raise TypeNotFound(missing.absent(self, "tracepoint", name))
        return found

    def enum(self, name: str) -> Optional[Mapping[int, str]]:
        """A manifest or declared enum's enumerator names by value; None if this kernel lacks the enum, or the
        types came from a vendored table (which carries no enums)."""
        if name in self.enums:
            return self.enums[name]
        if self.btf is None and (any(ref.name == name for ref in ENUMS) or missing.declarers(self, "enum", name)):
            return None
        raise missing.not_resolved(self, "enum", name)

    # -- JSON ------------------------------------------------------------------------

    def to_json(self, *, attach: bool = True, extra: Optional[Mapping[str, Any]] = None) -> str:
        """Stable, reviewable JSON: one field per line. attach=False leaves out funcs, tracepoints and enums
        (a vendored table, format 1)."""
        head = {
            "format": FORMAT if attach else TABLE_FORMAT,
            "release": self.release,
            "machine": self.machine,
            "byteorder": "little" if self.little_endian else "big",
            "source": self.source,
            **(extra or {}),
        }
        lines = ["{"]
        lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
        sections = [("fields", {k: _location_json(v) for k, v in sorted(self.fields.items())})]
        if attach:
            sections.append(("funcs", {k: _signature_json(v) for k, v in sorted(self.funcs.items())}))
            sections.append(("tracepoints", dict(sorted(self.tracepoints.items()))))
            sections.append(("enums", {k: _enum_json(v) for k, v in sorted(self.enums.items())}))
        for index, (name, entries) in enumerate(sections):
            lines.append(f"  {json.dumps(name)}: {{")
            items = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items()]
            lines.append(",\n".join(items))
            lines.append("  }" + ("," if index < len(sections) - 1 else ""))
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Optional[str] = None) -> KernelTypes:
        """Parse to_json's output; MalformedBTF if it is not that (or is of another format).

        Format 1 documents (vendored tables, and caches from before enums) have no enums.
        """
        try:
            doc = json.loads(text)
            if doc.get("format") not in (TABLE_FORMAT, FORMAT):
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT} (or {TABLE_FORMAT}, a table)")
            fields = {k: _location_from(k, v) for k, v in doc["fields"].items()}
            funcs = {k: _signature_from(k, v) for k, v in doc.get("funcs", {}).items()}
            tracepoints = {k: (None if v is None else int(v)) for k, v in doc.get("tracepoints", {}).items()}
            enums = {k: _enum_from(v) for k, v in doc.get("enums", {}).items()} if doc["format"] == FORMAT else {}
            return cls(
                release=str(doc["release"]),
                machine=str(doc["machine"]),
                little_endian=doc["byteorder"] == "little",
                source=source or str(doc["source"]),
                fields=fields,
                funcs=funcs,
                tracepoints=tracepoints,
                enums=enums,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MalformedBTF(f"{source or 'kernel types'}: not a gespann kernel-types document: {err}") from None

    def missing_fields(self) -> list[str]:
        """Manifest fields this document does not mention at all (stale table or cache)."""
        return [ref.key for ref in FIELDS if ref.key not in self.fields]

    def missing_enums(self) -> list[str]:
        """Manifest enums this document does not mention: stale, when it came from kernel BTF."""
        return [ref.name for ref in ENUMS if ref.name not in self.enums]

    def missing_needs(self, extra: KernelNeeds = NO_NEEDS) -> list[str]:
        """Entries of `extra` (needs beyond the manifest) this document does not mention."""
        return [f"{kind} {name}" for kind in KINDS for name in extra.names(kind) if name not in self.held(kind)]

    def held(self, kind: str) -> Mapping[str, Any]:
        """The section holding names of one kind ("field", "function", "tracepoint", "enum"; manifest.KINDS)."""
        return {"field": self.fields, "function": self.funcs, "tracepoint": self.tracepoints, "enum": self.enums}[kind]


def _location_json(location: Optional[FieldLocation]) -> Optional[dict]:
    if location is None:
        return None
    out: dict = {"offset": location.offset, "size": location.size, "type": location.type}
    if location.is_bitfield:
        out.update(bit_offset=location.bit_offset, bit_size=location.bit_size)
    return out


def _location_from(key: str, value: Optional[dict]) -> Optional[FieldLocation]:
    if value is None:
        return None
    struct, _, path = key.partition(".")
    offset = int(value["offset"])
    return FieldLocation(
        struct, path, offset, int(value["size"]), int(value.get("bit_offset", offset * 8)),
        int(value.get("bit_size", 0)), str(value["type"]),
    )


def _signature_json(signature: Optional[FuncSignature]) -> Optional[dict]:
    if signature is None:
        return None
    return {
        "btf_id": signature.btf_id,
        "return": signature.return_type,
        "params": [[p.name, p.type] for p in signature.params],
        "variadic": signature.variadic,
    }


def _signature_from(name: str, value: Optional[dict]) -> Optional[FuncSignature]:
    if value is None:
        return None
    params = tuple(FuncParam(str(n), str(t)) for n, t in value["params"])
    return FuncSignature(name, int(value["btf_id"]), str(value["return"]), params, bool(value["variadic"]))


def _enum_json(names: Optional[Mapping[int, str]]) -> Optional[dict]:
    return None if names is None else {str(value): name for value, name in sorted(names.items())}


def _enum_from(value: Optional[dict]) -> Optional[dict[int, str]]:
    if value is None:
        return None
    return {int(number): str(name) for number, name in value.items()}
