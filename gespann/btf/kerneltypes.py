"""The manifest resolved for one kernel, and its JSON form (disk cache and vendored tables).

This module must stay cheap to import: a warm start (cache hit) or a vendored
table never loads the BTF parser.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple, Optional

from .errors import FieldNotFound, MalformedBTF, TypeNotFound
from .locations import FieldLocation, FuncParam, FuncSignature
from .manifest import FIELDS

#: Version of the JSON layout below; bump it when the layout changes.
FORMAT = 1


class KernelTypes(NamedTuple):
    """Field offsets and attach targets of one kernel, keyed as in manifest.py.

    A None value means "absent on this kernel". funcs and tracepoints are empty
    when the types came from a vendored table: without kernel BTF there is no
    fentry or tp_btf to attach to.
    """

    release: str
    machine: str
    little_endian: bool
    source: str  # where the types came from, for logs: a BTF path, a table, the cache
    fields: Mapping[str, Optional[FieldLocation]]
    funcs: Mapping[str, Optional[FuncSignature]] = {}  # never mutated: a shared empty default is safe
    tracepoints: Mapping[str, Optional[int]] = {}  # btf_trace_* typedef ids

    def field(self, key: str) -> FieldLocation:
        """The location of a manifest field ("tcp_sock.srtt_us"); FieldNotFound if this kernel lacks it."""
        location = self.optional_field(key)
        if location is None:
            raise FieldNotFound(f"{key} does not exist on kernel {self.release} ({self.source})")
        return location

    def optional_field(self, key: str) -> Optional[FieldLocation]:
        """The location of a manifest field, or None if this kernel lacks it."""
        try:
            return self.fields[key]
        except KeyError:
            raise KeyError(f"{key} is not in gespann.btf.manifest.FIELDS; add it there first") from None

    def offset(self, key: str) -> int:
        return self.field(key).offset

    def func(self, name: str) -> FuncSignature:
        found = self.funcs.get(name)
        if found is None:
            raise TypeNotFound(f"no BTF for function {name} on kernel {self.release} ({self.source})")
        return found

    def tracepoint_id(self, name: str) -> int:
        found = self.tracepoints.get(name)
        if found is None:
            raise TypeNotFound(f"no btf_trace_{name} on kernel {self.release} ({self.source})")
        return found

    # -- JSON ------------------------------------------------------------------------

    def to_json(self, *, attach: bool = True, extra: Optional[Mapping[str, Any]] = None) -> str:
        """Stable, reviewable JSON: one field per line. attach=False leaves out funcs and tracepoints."""
        head = {
            "format": FORMAT,
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
        for index, (name, entries) in enumerate(sections):
            lines.append(f"  {json.dumps(name)}: {{")
            items = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in entries.items()]
            lines.append(",\n".join(items))
            lines.append("  }" + ("," if index < len(sections) - 1 else ""))
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Optional[str] = None) -> KernelTypes:
        """Parse to_json's output; MalformedBTF if it is not that (or is of another format)."""
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
            fields = {k: _location_from(k, v) for k, v in doc["fields"].items()}
            funcs = {k: _signature_from(k, v) for k, v in doc.get("funcs", {}).items()}
            tracepoints = {k: (None if v is None else int(v)) for k, v in doc.get("tracepoints", {}).items()}
            return cls(
                release=str(doc["release"]),
                machine=str(doc["machine"]),
                little_endian=doc["byteorder"] == "little",
                source=source or str(doc["source"]),
                fields=fields,
                funcs=funcs,
                tracepoints=tracepoints,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MalformedBTF(f"{source or 'kernel types'}: not a gespann kernel-types document: {err}") from None

    def missing_fields(self) -> list[str]:
        """Manifest fields this document does not mention at all (stale table or cache)."""
        return [ref.key for ref in FIELDS if ref.key not in self.fields]


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
