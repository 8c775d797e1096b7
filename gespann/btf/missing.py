"""What a lookup of kernel types says when it finds nothing: which name is missing, and from where.

Three places a name can be missing from, each with its own remedy:
  the kernel's BTF        the running kernel has no such field, function, tracepoint or enum;
  the names resolved      neither gespann's manifest lists it nor any probe declared it
                          (Probe(kernel=KernelNeeds(...))), so it was never looked up;
  a vendored table        it holds gespann's manifest's fields only, for kernels without BTF.
Telling the first two apart takes a look at the kernel's BTF, done apart (apart.py) and only on this path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import BTFError, FieldNotFound, NotDeclared, TypeNotFound
from .manifest import KINDS, KernelNeeds, listed
from .sources import kernel_has_btf

if TYPE_CHECKING:
    from .kerneltypes import KernelTypes

log = logging.getLogger(__name__)

#: How vendored.load_table names its tables' source.
VENDORED = "vendored table "

#: What attaches by the BTF id of a function or a tracepoint: why those need kernel BTF whatever the probe says.
_ATTACHES_BY_ID = {"function": "fentry (and kernel iterators) attach", "tracepoint": "tp_btf attaches"}


def declarers(types: KernelTypes, kind: str, name: str) -> list[str]:
    """The probes that declared `name` of `kind` ("field", "function", "tracepoint", "enum")."""
    return [probe for probe, need in types.needs.items() if name in need.names(kind)]


def absent(types: KernelTypes, kind: str, name: str) -> str:
    """A name that was looked up and that the kernel lacks."""
    if types.btf is None:
        return f"{name} does not exist on kernel {types.release} ({types.source})"
    return f"the kernel's BTF ({types.btf}) has no {kind} {name} (kernel {types.release})"


def not_resolved(types: KernelTypes, kind: str, name: str) -> BTFError:
    """The error for a name these kernel types do not hold at all."""
    if types.btf is None:
        return _beyond_table(types, kind, name)
    if declarers(types, kind, name):  # only kernel types made without the probes' needs get here
        return _error(kind)(f"{kind} {name} was declared by {_probes(declarers(types, kind, name))}, but these "
                            f"kernel types ({types.source}) were resolved without the probes' needs")
    found = _kernel_btf_has(types, kind, name)
    where = (f"; the kernel's BTF ({types.btf}) has it" if found
             else f", and the kernel's BTF ({types.btf}) has no {kind} {name} either" if found is False else "")
    return NotDeclared(_undeclared(kind, name) + where)


def not_offered(types: KernelTypes) -> list[str]:
    """One line per probe need a vendored table cannot offer (empty for types from BTF)."""
    if types.btf is not None:
        return []
    lines = [str(_beyond_table(types, kind, name)) for need in types.needs.values() for kind in KINDS
             for name in need.names(kind) if name not in types.held(kind)]
    return list(dict.fromkeys(lines))  # a name several probes need: one line naming them all


def _beyond_table(types: KernelTypes, kind: str, name: str) -> BTFError:
    vendored = types.source.startswith(VENDORED)
    table = (f"the vendored table for kernel {types.release} ({types.source.removeprefix(VENDORED)})" if vendored
             else f"{types.source} (kernel types made without BTF)")
    remedy = ("this kernel has BTF: set btf.source to auto (or btf) to resolve it from there" if kernel_has_btf()
              else "on this kernel, without BTF, it cannot be resolved")
    if kind in _ATTACHES_BY_ID:
        return TypeNotFound(f"{kind} {name} has no BTF id here: {_ATTACHES_BY_ID[kind]} by its id in the kernel's "
                            f"BTF, and kernel types come from {table}, which carries struct fields only; {remedy}")
    probes = declarers(types, kind, name)
    if not probes and name in listed(kind):
        return _error(kind)(f"{table} lacks {kind} {name} of gespann's manifest: it was made by an older gespann; "
                            "make it again with tools/vmlinux_tables.py")
    if not probes:
        return NotDeclared(f"{_undeclared(kind, name)}; and {table} holds gespann's manifest only: {remedy}")
    return _error(kind)(f"{_probes(probes)} {'needs' if len(probes) == 1 else 'need'} {kind} {name}, which {table} "
                        f"does not carry (vendored tables hold gespann's manifest only); {remedy}")


def _undeclared(kind: str, name: str) -> str:
    return (f"{kind} {name} is neither in gespann's manifest nor declared by a probe "
            f"(Probe(kernel=KernelNeeds({KINDS[kind]}=({name!r},))))")


def _kernel_btf_has(types: KernelTypes, kind: str, name: str) -> Optional[bool]:
    """Whether the BTF the types came from has `name`: True, False, or None when that cannot be told."""
    from .apart import resolve_apart  # a child process reads the BTF: only on this error path

    try:
        found = resolve_apart(Path(types.btf), types.release, types.machine, KernelNeeds(**{KINDS[kind]: (name,)}))
    except (BTFError, ValueError) as err:
        log.debug("cannot tell whether %s has %s %s: %s", types.btf, kind, name, err)
        return None
    return found.held(kind).get(name) is not None


def _error(kind: str) -> type[BTFError]:
    return FieldNotFound if kind == "field" else TypeNotFound


def _probes(names: list[str]) -> str:
    return f"probe {names[0]}" if len(names) == 1 else f"probes {', '.join(names)}"
