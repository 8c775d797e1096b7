"""Resolve the manifest against one Spec: the slow path that the cache and the tables avoid."""

from __future__ import annotations

import os
from typing import Optional

from . import types as t
from .errors import FieldNotFound, TypeNotFound
from .fieldpath import locate
from .functions import TRACEPOINT_TYPEDEF_PREFIX, func_signature, tracepoint_typedef_id
from .kerneltypes import KernelTypes
from .kinds import Kind
from .manifest import ENUMS, FIELDS, FUNCS, NO_NEEDS, TRACEPOINTS, AttachRef, EnumRef, KernelNeeds
from .spec import Spec


def resolve_manifest(
    spec: Spec, *, release: Optional[str] = None, machine: Optional[str] = None, attach: bool = True,
    extra: KernelNeeds = NO_NEEDS,
) -> KernelTypes:
    """Every manifest entry located in `spec`, and the probes' needs beyond it (`extra`, all optional: an
    entry the kernel lacks is recorded as absent); raises FieldNotFound naming all missing required fields.

    attach=False skips functions, tracepoints and enums (vendored tables do not keep them).
    """
    uname = os.uname()
    funcs_wanted = (*FUNCS, *(AttachRef(name) for name in extra.functions))
    tracepoints_wanted = (*TRACEPOINTS, *(AttachRef(name) for name in extra.tracepoints))
    enums_wanted = (*ENUMS, *(EnumRef(name) for name in extra.enums))
    spec.lookup_names(_names_used((*FIELDS, *extra.fields), funcs_wanted, tracepoints_wanted, enums_wanted))
    fields, missing = {}, []
    for ref in (*FIELDS, *extra.fields):
        try:
            fields[ref.key] = locate(spec, ref.struct, ref.path)
        except (FieldNotFound, TypeNotFound) as err:
            fields[ref.key] = None
            if ref.required:
                missing.append(f"{ref.key} ({err})")
    if missing:
        raise FieldNotFound(f"{spec.name} lacks fields gespann requires: " + "; ".join(missing))
    funcs, tracepoints, enums = {}, {}, {}
    if attach:
        funcs = {ref.name: _optional(func_signature, spec, ref.name, ref.required) for ref in funcs_wanted}
        tracepoints = {ref.name: _optional(tracepoint_typedef_id, spec, ref.name, ref.required)
                       for ref in tracepoints_wanted}
        enums = {ref.name: _optional(enum_names, spec, ref.name, ref.required) for ref in enums_wanted}
    return KernelTypes(
        release=release or uname.release,
        machine=machine or uname.machine,
        little_endian=spec.little_endian,
        source=spec.name,
        fields=fields,
        funcs=funcs,
        tracepoints=tracepoints,
        enums=enums,
        btf=spec.name,
    )


def enum_names(spec: Spec, name: str) -> dict[int, str]:
    """Enumerator names by value of the ENUM or ENUM64 called `name`, exactly as BTF spells them.

    Of several enums of that name, the first (lowest id: vmlinux before a module) that has
    enumerators; a declaration without any gives no names. Where enumerators share a value,
    the first declared names it.
    """
    kinds = (Kind.ENUM, Kind.ENUM64)
    found = spec.find_all(name, kinds)
    if not found:
        spec.find(name, kinds)  # raises TypeNotFound, with close names
    enum: t.Enum = next((e for e in found if e.values), found[0])
    names: dict[int, str] = {}
    for value in enum.values:
        names.setdefault(value.value, value.name)
    return names


def _optional(lookup, spec: Spec, name: str, required: bool):
    try:
        return lookup(spec, name)
    except TypeNotFound:
        if required:
            raise
        return None


def _names_used(fields, funcs, tracepoints, enums) -> set[str]:
    """Every type name the resolution looks up, so one pass over the types finds them all."""
    names = {ref.struct for ref in fields} | {ref.name for ref in funcs} | {ref.name for ref in enums}
    return names | {TRACEPOINT_TYPEDEF_PREFIX + ref.name for ref in tracepoints}
