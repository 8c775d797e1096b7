"""BPF maps owned by this process: one class per kind, keys and values as bytes or through a codec.

A codec is anything with `build(obj) -> bytes`, `parse(bytes) -> obj` and
`sizeof() -> int`: a fixed-size `construct` struct, or `U32`/`U64` below.
Where a size is given instead of a codec, keys and values are plain bytes.
Per-CPU maps hold a list with one value per possible CPU.
"""
from __future__ import annotations

import ctypes
import errno
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Protocol, Union

from . import syscall
from .cpus import possible_cpus
from .errors import ENOTSUPP, BPFError, KeyNotFoundError, PermissionDeniedError
from .fd import Closable
from .memory import PAGE_SIZE
from .syscall import Cmd, MapType, UpdateFlags


class Codec(Protocol):
    def build(self, obj: Any) -> bytes: ...
    def parse(self, data: bytes) -> Any: ...
    def sizeof(self) -> int: ...


class StructCodec:
    """A codec from a `struct` format; native byte order, as the kernel stores map data."""

    def __init__(self, fmt: str):
        self._struct = struct.Struct(fmt)
        self._single = len(self._struct.unpack(bytes(self._struct.size))) == 1

    def build(self, obj: Any) -> bytes:
        return self._struct.pack(obj) if self._single else self._struct.pack(*obj)

    def parse(self, data: bytes) -> Any:
        values = self._struct.unpack(data)
        return values[0] if self._single else values

    def sizeof(self) -> int:
        return self._struct.size


U32 = StructCodec("=I")
U64 = StructCodec("=Q")

Encoding = Union[int, Codec]
"""A key or value size in bytes (bytes in and out), or a codec that converts them."""

# Errnos by which a kernel says it lacks a batch or lookup-and-delete operation for a map.
_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)
_BATCH_CHUNK = 256


@dataclass(frozen=True)
class MapInfo:
    """What the kernel reports of a map (BPF_OBJ_GET_INFO_BY_FD)."""
    id: int
    name: str
    type: MapType
    key_size: int
    value_size: int
    max_entries: int
    flags: int


class Map(Closable):
    """A kernel map and the fd that keeps it alive; `close()` (or leaving a `with`) releases it.

    The kernel frees the map once no fd and no loaded program refers to it.
    """

    def __init__(self, map_type: MapType, key_size: int, value_size: int, max_entries: int,
                 *, flags: int = 0, name: str = "", btf: Optional[tuple[int, int, int]] = None):
        self.type, self.name = MapType(map_type), syscall.object_name(name)
        self.key_size, self.value_size, self.max_entries, self.flags = key_size, value_size, max_entries, flags
        self.fd = syscall.bpf_map_create(map_type, key_size, value_size, max_entries, flags, self.name, btf)

    def info(self) -> MapInfo:
        raw = syscall.BpfMapInfo()
        syscall.bpf_obj_get_info_by_fd(int(self.fd), raw)
        return MapInfo(raw.id, raw.name.decode(), MapType(raw.type), raw.key_size, raw.value_size,
                       raw.max_entries, raw.map_flags)

    def close(self) -> None:
        self.fd.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.type.name}, fd={self.fd!r})"


def _buffer(data: bytes) -> ctypes.Array:
    """A mutable copy of `data` the kernel can read (and write) through its address."""
    return ctypes.create_string_buffer(data, len(data))


def _size(layout: Encoding) -> int:
    return layout if isinstance(layout, int) else layout.sizeof()


class KeyValueMap(Map):
    """A map addressed by key from user space, with dict-like access.

    `m[key]`, `m[key] = value`, `del m[key]`, `key in m`, iteration over keys,
    and `items()`; batch operations use one syscall per chunk where the kernel
    has them (5.6+) and fall back to one per key where it does not.
    """

    map_type: MapType
    per_cpu = False

    def __init__(self, key: Encoding, value: Encoding, max_entries: int, *, flags: int = 0, name: str = ""):
        super().__init__(self.map_type, _size(key), _size(value), max_entries, flags=flags, name=name)
        self._key_codec = None if isinstance(key, int) else key
        self._value_codec = None if isinstance(value, int) else value
        self._cpus = possible_cpus() if self.per_cpu else 1
        self._stride = (self.value_size + 7) & ~7 if self.per_cpu else self.value_size
        self._unsupported: set[Cmd] = set()  # batch commands the kernel refused for this map

    # --- encoding -------------------------------------------------------------------------------

    def _encode(self, codec: Optional[Codec], size: int, obj: Any, what: str) -> bytes:
        data = codec.build(obj) if codec is not None else bytes(obj)
        if len(data) != size:
            raise ValueError(f"map {self.name!r}: a {what} has {size} bytes, not {len(data)}")
        return data

    def _key_bytes(self, key: Any) -> bytes:
        return self._encode(self._key_codec, self.key_size, key, "key")

    def _key(self, key: Any) -> ctypes.Array:
        return _buffer(self._key_bytes(key))

    def _decode_key(self, raw: bytes) -> Any:
        return raw if self._key_codec is None else self._key_codec.parse(raw)

    def _entry_size(self) -> int:
        """Bytes of one value in the kernel's layout (all CPUs' values for a per-CPU map)."""
        return self._stride * self._cpus

    def _value_buffer(self, count: int = 1) -> ctypes.Array:
        return ctypes.create_string_buffer(self._entry_size() * count)

    def _value(self, value: Any) -> bytes:
        """The kernel's layout of one value. For a per-CPU map, a list gives each CPU its value
        and anything else is every CPU's value; each is padded to 8 bytes."""
        if not self.per_cpu:
            return self._encode(self._value_codec, self.value_size, value, "value")
        values = value if isinstance(value, list) else [value] * self._cpus
        if len(values) != self._cpus:
            raise ValueError(f"map {self.name!r}: a per-CPU value needs {self._cpus} values, not {len(values)}")
        pad = bytes(self._stride - self.value_size)
        return b"".join(self._encode(self._value_codec, self.value_size, v, "value") + pad for v in values)

    def _decode_value(self, raw: bytes) -> Any:
        def one(data: bytes) -> Any:
            return data if self._value_codec is None else self._value_codec.parse(data)

        if not self.per_cpu:
            return one(raw[:self.value_size])
        return [one(raw[cpu * self._stride:cpu * self._stride + self.value_size]) for cpu in range(self._cpus)]

    # --- single elements ------------------------------------------------------------------------

    def lookup(self, key: Any, default: Any = None) -> Any:
        """The value at `key`, or `default` when there is none."""
        value = self._value_buffer()
        try:
            syscall.bpf_map_lookup_elem(int(self.fd), self._key(key), value)
        except BPFError as e:
            if e.errno == errno.ENOENT:
                return default
            raise
        return self._decode_value(value.raw)

    def update(self, key: Any, value: Any, flags: UpdateFlags = UpdateFlags.ANY) -> None:
        """Store `value` at `key`; NOEXIST or EXIST make it fail (EEXIST/ENOENT) if the key is / is not there."""
        syscall.bpf_map_update_elem(int(self.fd), self._key(key), _buffer(self._value(value)), flags)

    def delete(self, key: Any) -> None:
        """Remove `key`; KeyNotFoundError if it is not there. Arrays cannot delete (EINVAL)."""
        try:
            syscall.bpf_map_delete_elem(int(self.fd), self._key(key))
        except BPFError as e:
            if e.errno == errno.ENOENT:
                raise self._missing(key) from None
            raise

    def pop(self, key: Any) -> Any:
        """Remove `key` and return its value, atomically where the kernel can (5.14+ for hashes)."""
        value, key_buf = self._value_buffer(), self._key(key)
        try:
            syscall.bpf_map_lookup_and_delete_elem(int(self.fd), key_buf, value)
        except BPFError as e:
            if e.errno == errno.ENOENT:
                raise self._missing(key) from None
            if e.errno not in _UNSUPPORTED:
                raise
            value = self[key]
            self.delete(key)
            return value
        return self._decode_value(value.raw)

    def _missing(self, key: Any) -> KeyNotFoundError:
        return KeyNotFoundError(f"map {self.name!r} has no key {key!r}", errno.ENOENT)

    def __getitem__(self, key: Any) -> Any:
        value = self.lookup(key, _MISSING)
        if value is _MISSING:
            raise self._missing(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        return self.lookup(key, _MISSING) is not _MISSING

    # --- iteration ------------------------------------------------------------------------------

    def keys(self) -> Iterator[Any]:
        """Keys by BPF_MAP_GET_NEXT_KEY. When the current key is deleted meanwhile, a hash map
        starts over from its first key, so at most max_entries keys are produced."""
        current: Optional[ctypes.Array] = None
        for _ in range(self.max_entries):
            following = ctypes.create_string_buffer(self.key_size)
            try:
                syscall.bpf_map_get_next_key(int(self.fd), current, following)
            except BPFError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            current = following
            yield self._decode_key(following.raw)

    __iter__ = keys

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs, one lookup per key; keys deleted meanwhile are skipped."""
        for key in self.keys():
            value = self.lookup(key, _MISSING)
            if value is not _MISSING:
                yield key, value

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    # --- batches --------------------------------------------------------------------------------

    def lookup_batch(self) -> list[tuple[Any, Any]]:
        """All (key, value) pairs, a chunk of elements per syscall."""
        return self._batch_read(Cmd.MAP_LOOKUP_BATCH)

    def lookup_and_delete_batch(self) -> list[tuple[Any, Any]]:
        """All (key, value) pairs, each removed as it is read: drains the map."""
        return self._batch_read(Cmd.MAP_LOOKUP_AND_DELETE_BATCH)

    def update_batch(self, items: Iterable[tuple[Any, Any]], flags: UpdateFlags = UpdateFlags.ANY) -> None:
        pairs = list(items)
        if not pairs:
            return
        keys = b"".join(self._key_bytes(k) for k, _ in pairs)
        values = b"".join(self._value(v) for _, v in pairs)
        if not self._batch_write(Cmd.MAP_UPDATE_BATCH, len(pairs), keys, values, flags):
            for key, value in pairs:
                self.update(key, value, flags)

    def delete_batch(self, keys: Iterable[Any]) -> None:
        """Remove every key in `keys`; KeyNotFoundError if one is missing (those before it are gone)."""
        keys = list(keys)
        if not keys:
            return
        raw = b"".join(self._key_bytes(k) for k in keys)
        try:
            done = self._batch_write(Cmd.MAP_DELETE_BATCH, len(keys), raw)
        except BPFError as e:
            if e.errno == errno.ENOENT:
                raise self._missing(keys) from None
            raise
        if not done:
            for key in keys:
                self.delete(key)

    def _batch_write(self, cmd: Cmd, count: int, keys: bytes, values: Optional[bytes] = None,
                     flags: int = 0) -> bool:
        """One batch syscall over all elements; False if the kernel has no such batch operation."""
        if cmd in self._unsupported:
            return False
        value_buf = None if values is None else _buffer(values)
        try:
            syscall.bpf_map_batch(cmd, int(self.fd), count, _buffer(keys), value_buf, elem_flags=flags)
        except BPFError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            self._unsupported.add(cmd)
            return False
        return True

    def _batch_read(self, cmd: Cmd) -> list[tuple[Any, Any]]:
        if cmd not in self._unsupported:
            try:
                pairs: list[tuple[Any, Any]] = []
                entry = self._entry_size()
                for raw_keys, raw_values, count in self._batch_read_chunks(cmd):
                    pairs.extend((self._decode_key(raw_keys[i * self.key_size:(i + 1) * self.key_size]),
                                  self._decode_value(raw_values[i * entry:(i + 1) * entry])) for i in range(count))
                return pairs
            except BPFError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                self._unsupported.add(cmd)
        if cmd == Cmd.MAP_LOOKUP_BATCH:
            return list(self.items())
        return [(key, self.pop(key)) for key in list(self.keys())]

    def raw_chunks(self) -> Iterator[tuple[bytes, bytes, int]]:
        """Every element undecoded, a chunk at a time: (keys, values, count), each key and value in the
        kernel's layout, back to back. For a walk over a large map that decodes only the fields it needs
        (struct.iter_unpack over `values`), and keeps no object per element."""
        if Cmd.MAP_LOOKUP_BATCH not in self._unsupported:
            try:
                yield from self._batch_read_chunks(Cmd.MAP_LOOKUP_BATCH)
                return
            except BPFError as e:
                if e.errno not in _UNSUPPORTED:
                    raise
                self._unsupported.add(Cmd.MAP_LOOKUP_BATCH)
        keys, values = bytearray(), bytearray()
        for raw_key in self.keys():
            value = self._value_buffer()
            try:
                syscall.bpf_map_lookup_elem(int(self.fd), _buffer(self._key_bytes(raw_key)), value)
            except KeyNotFoundError:
                continue
            except BPFError as e:
                if e.errno == errno.ENOENT:
                    continue
                raise
            keys += self._key_bytes(raw_key)
            values += value.raw
        yield bytes(keys), bytes(values), len(keys) // self.key_size

    def _batch_read_chunks(self, cmd: Cmd) -> Iterator[tuple[bytes, bytes, int]]:
        """Page through the map. The batch token is opaque: a key for arrays, a bucket index
        (u32) for hashes, hence max(key_size, 4) bytes. A hash bucket larger than the chunk
        makes the kernel say ENOSPC, and the chunk grows."""
        chunk = min(self.max_entries, _BATCH_CHUNK)
        token_size = max(self.key_size, 4)
        position, following = None, ctypes.create_string_buffer(token_size)
        while True:
            keys, values = ctypes.create_string_buffer(chunk * self.key_size), self._value_buffer(chunk)
            try:
                count, done = syscall.bpf_map_batch(cmd, int(self.fd), chunk, keys, values, position, following)
            except BPFError as e:
                if e.errno == errno.ENOSPC and chunk < self.max_entries:
                    chunk = min(chunk * 2, self.max_entries)
                    continue
                raise
            yield keys.raw[:count * self.key_size], values.raw[:count * self._entry_size()], count
            if done:
                return
            position, following = following, ctypes.create_string_buffer(token_size)


_MISSING = object()


class HashMap(KeyValueMap):
    map_type = MapType.HASH


class LruHashMap(KeyValueMap):
    """A hash map that evicts the least recently used element instead of refusing a new one."""
    map_type = MapType.LRU_HASH


class PerCpuHashMap(KeyValueMap):
    map_type, per_cpu = MapType.PERCPU_HASH, True


class LruPerCpuHashMap(KeyValueMap):
    map_type, per_cpu = MapType.LRU_PERCPU_HASH, True


class LpmTrieMap(KeyValueMap):
    """Longest-prefix match: each key starts with its prefix length in bits (u32), then the data it
    matches (an address); a lookup with a full-length key finds the longest stored prefix of it. The kernel
    wants BPF_F_NO_PREALLOC for it."""
    map_type = MapType.LPM_TRIE
    NO_PREALLOC = 1

    def __init__(self, key: Encoding, value: Encoding, max_entries: int, *, name: str = ""):
        super().__init__(key, value, max_entries, flags=self.NO_PREALLOC, name=name)


class ArrayMap(KeyValueMap):
    """max_entries preallocated, zeroed values indexed 0..max_entries-1 (keys are ints by default)."""
    map_type = MapType.ARRAY

    def __init__(self, value: Encoding, max_entries: int, *, key: Encoding = U32, flags: int = 0, name: str = ""):
        super().__init__(key, value, max_entries, flags=flags, name=name)


class PerCpuArrayMap(ArrayMap):
    map_type, per_cpu = MapType.PERCPU_ARRAY, True


class PerfEventArrayMap(ArrayMap):
    """Per-CPU perf event fds that bpf_perf_event_output() writes to; a PerfBufReader fills it."""
    map_type = MapType.PERF_EVENT_ARRAY

    def __init__(self, *, name: str = "", max_entries: Optional[int] = None):
        super().__init__(U32, max_entries or possible_cpus(), name=name)


class RingBufMap(Map):
    """A BPF ring buffer (5.8+) shared by all CPUs; `size` bytes, a power of two and a page multiple."""

    def __init__(self, size: int = 256 * 1024, *, name: str = ""):
        if size < PAGE_SIZE or size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two of at least {PAGE_SIZE}, not {size}")
        super().__init__(MapType.RINGBUF, 0, 0, size, name=name)


class SocketStorageMap(Map):
    """Socket-local storage (BPF_MAP_TYPE_SK_STORAGE, from tracing programs 5.11+): one value per socket,
    made by a program with bpf_sk_storage_get and freed with the socket, so it can never be evicted
    nor outlive what it describes. Programs alone read and write it.

    The kernel wants the value described in BTF: `btf_blob` holds a 32-bit int key type and the value
    type, with their ids (gespann.btf.writer makes it). The BTF is loaded here and kept with the map.
    """

    #: BPF_F_NO_PREALLOC: required; storage exists only for the sockets that have it.
    NO_PREALLOC = 1

    def __init__(self, value_size: int, btf_blob: bytes, key_type_id: int, value_type_id: int, *, name: str = ""):
        log = ctypes.create_string_buffer(4096)
        try:
            self.btf_fd = syscall.bpf_btf_load(btf_blob, log)
        except PermissionDeniedError:
            raise
        except BPFError as e:
            raise BPFError(f"loading the BTF of map {name!r}: {e}; {log.value.decode(errors='replace')}",
                           e.errno) from None
        try:
            super().__init__(MapType.SK_STORAGE, 4, value_size, 0, flags=self.NO_PREALLOC, name=name,
                             btf=(int(self.btf_fd), key_type_id, value_type_id))
        except BaseException:
            self.btf_fd.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.btf_fd.close()
