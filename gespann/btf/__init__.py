"""Kernel types without a compiler: BTF parsing, field offsets, and vendored tables.

    from gespann import btf

    types = btf.kernel_types()                  # the probes' manifest for this kernel
    types.offset("tcp_sock.srtt_us")
    btf.offsetof("sock", "__sk_common.skc_dport")   # any field, straight from BTF
    btf.func_signature("tcp_connect")               # fentry attach id and arguments

Pure data: nothing here makes a syscall besides reading files. The parser
(construct) is imported on first use, so a warm start that hits the cache, or
a host served by a vendored table, never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

from .errors import BTFError, FieldNotFound, MalformedBTF, NoKernelTypes, NotDeclared, TypeNotFound
from .kernel import kernel_types
from .kerneltypes import KernelTypes
from .locations import FieldLocation, FuncParam, FuncSignature
from .manifest import FieldRef, KernelNeeds
from .sources import kernel_has_btf, load_bytes, load_file, load_module, load_vmlinux

if TYPE_CHECKING:
    from .spec import Spec

BTFSource = Union["Spec", str, Path, None]

__all__ = [
    "BTFError", "FieldLocation", "FieldNotFound", "FieldRef", "FuncParam", "FuncSignature", "KernelNeeds",
    "KernelTypes", "MalformedBTF", "NoKernelTypes", "NotDeclared", "Spec", "TypeNotFound", "func_signature",
    "kernel_has_btf", "kernel_types", "load_bytes", "load_file", "load_module", "load_vmlinux", "offsetof",
]


def offsetof(struct: str, path: str, btf: BTFSource = None) -> FieldLocation:
    """Where `struct`'s member `path` lives, from the running kernel's BTF or `btf` (a file or a Spec).

    This is `gespann btf offsetof STRUCT FIELD.PATH [--btf FILE]`; print the
    result with str() for people, or .as_dict() as JSON.
    """
    from .fieldpath import locate

    return locate(_spec(btf), struct, path)


def func_signature(name: str, btf: BTFSource = None) -> FuncSignature:
    """A kernel function's BTF id (fentry's attach_btf_id) and parameters."""
    from .functions import func_signature as lookup

    return lookup(_spec(btf), name)


def _spec(btf: BTFSource) -> "Spec":
    if btf is None:
        return load_vmlinux()
    if isinstance(btf, (str, Path)):
        return load_file(btf)
    return btf


def __getattr__(name: str):
    if name == "Spec":  # lazily, so that importing gespann.btf does not import construct
        from .spec import Spec

        return Spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
