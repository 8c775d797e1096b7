"""Kernel functions and attach targets as BTF names them: what fentry and tp_btf need.

fentry/fexit attach by the BTF id of a FUNC; tp_btf attaches by the id of the
`btf_trace_<tracepoint>` typedef. Both ids are only meaningful to the kernel
whose BTF they came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import types as t
from .errors import MalformedBTF
from .kinds import Kind
from .locations import FuncParam, FuncSignature
from .typeinfo import type_name

if TYPE_CHECKING:
    from .spec import Spec

#: Prefix of the typedefs the kernel declares for each tracepoint, for BPF_TRACE_RAW_TP.
TRACEPOINT_TYPEDEF_PREFIX = "btf_trace_"


def func_signature(spec: Spec, name: str) -> FuncSignature:
    """The FUNC named `name` with its parameters; TypeNotFound if the kernel has none."""
    func = spec.find(name, Kind.FUNC)
    assert isinstance(func, t.Func)
    proto = spec.type(func.proto)
    if not isinstance(proto, t.FuncProto):
        raise MalformedBTF(f"{spec.name}: FUNC {name!r} [{func.id}] points at {proto.kind.name}, not FUNC_PROTO")
    params = tuple(FuncParam(p.name, type_name(spec, p.type)) for p in proto.params)
    return FuncSignature(name, func.id, type_name(spec, proto.return_type), params, proto.variadic)


def tracepoint_typedef_id(spec: Spec, tracepoint: str) -> int:
    """BTF id of `btf_trace_<tracepoint>`, the attach_btf_id of a tp_btf program."""
    return spec.find(TRACEPOINT_TYPEDEF_PREFIX + tracepoint, Kind.TYPEDEF).id
