"""Resolve the manifest against one Spec: the slow path that the cache and the tables avoid."""

from __future__ import annotations

import os
from typing import Optional

from .errors import FieldNotFound, TypeNotFound
from .fieldpath import locate
from .functions import TRACEPOINT_TYPEDEF_PREFIX, func_signature, tracepoint_typedef_id
from .kerneltypes import KernelTypes
from .manifest import FIELDS, FUNCS, TRACEPOINTS
from .spec import Spec


def resolve_manifest(
    spec: Spec, *, release: Optional[str] = None, machine: Optional[str] = None, attach: bool = True
) -> KernelTypes:
    """Every manifest entry located in `spec`; raises FieldNotFound naming all missing required fields.

    attach=False skips functions and tracepoints (vendored tables do not keep them).
    """
    uname = os.uname()
    spec.lookup_names(_names_used())
    fields, missing = {}, []
    for ref in FIELDS:
        try:
            fields[ref.key] = locate(spec, ref.struct, ref.path)
        except (FieldNotFound, TypeNotFound) as err:
            fields[ref.key] = None
            if ref.required:
                missing.append(f"{ref.key} ({err})")
    if missing:
        raise FieldNotFound(f"{spec.name} lacks fields gespann requires: " + "; ".join(missing))
    funcs, tracepoints = {}, {}
    if attach:
        funcs = {ref.name: _optional(func_signature, spec, ref.name, ref.required) for ref in FUNCS}
        tracepoints = {ref.name: _optional(tracepoint_typedef_id, spec, ref.name, ref.required) for ref in TRACEPOINTS}
    return KernelTypes(
        release=release or uname.release,
        machine=machine or uname.machine,
        little_endian=spec.little_endian,
        source=spec.name,
        fields=fields,
        funcs=funcs,
        tracepoints=tracepoints,
    )


def _optional(lookup, spec: Spec, name: str, required: bool):
    try:
        return lookup(spec, name)
    except TypeNotFound:
        if required:
            raise
        return None


def _names_used() -> set[str]:
    """Every type name the manifest looks up, so one pass over the types finds them all."""
    names = {ref.struct for ref in FIELDS} | {ref.name for ref in FUNCS}
    return names | {TRACEPOINT_TYPEDEF_PREFIX + ref.name for ref in TRACEPOINTS}
