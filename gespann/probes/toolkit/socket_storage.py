"""Socket-local storage for probes: one value per socket, a Record, that dies with the socket.

Where the kernel allows it (BPF_MAP_TYPE_SK_STORAGE from tracing programs,
5.11+, with the socket as a BTF pointer: tp_btf, fentry, iterators), state kept
per connection cannot be evicted by other connections, nor outlive its socket:
what a bounded hash map keyed by the socket's address cannot promise. The
kernel wants the value described in BTF, so the Record's layout is written
as a struct of integers (gespann.btf.writer).
"""

from __future__ import annotations

from asm import R1, R2, R3, R4, Program, Record, Register
from asm.record import Array, Scalar

from ...bpf.maps import SocketStorageMap
from ...btf.writer import storage_types

#: bpf_sk_storage_get's flag: make the value, zeroed, if the socket has none.
CREATE = 1


def storage_map(record: Record, name: str) -> SocketStorageMap:
    """A socket storage map whose value is `record`; `name` is the kernel's name for it."""
    types = storage_types(f"gsp_{record.name}", list(_members(record)), record.size)
    return SocketStorageMap(record.size, types.blob, types.key_type_id, types.value_type_id, name=name)


def _members(record: Record):
    """(name, width, offset) of each integer in `record`; an array is its elements' (bytes as 8-byte words)."""
    for field in record.fields:
        if isinstance(field.type, Scalar):
            yield field.name, field.size, field.offset
        elif isinstance(field.type, Array) and isinstance(field.type.element, Scalar):
            width = 8 if field.size % 8 == 0 and field.type.element.size == 1 else field.type.element.size
            for i in range(field.size // width):
                yield f"{field.name}_{i}", width, field.offset + i * width
        else:
            raise ValueError(f"{record.name}.{field.name}: only integers and arrays of them go in socket storage")


def emit_storage_get(p: Program, map_name: str, sk: Register, flags: int = 0) -> None:
    """R0 = the socket's value in `map_name` (`sk` a BTF pointer to it), or NULL; with CREATE, made zeroed
    when it has none (NULL without memory). Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, sk)
    p.mov(R3, 0)
    p.mov(R4, flags)
    p.call("sk_storage_get")


def emit_storage_delete(p: Program, map_name: str, sk: Register) -> None:
    """Remove the socket's value from `map_name`, if it has one. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, sk)
    p.call("sk_storage_delete")
