"""The bpf(2) system call through ctypes, and the uapi layouts it takes.

This module knows commands and structures, not what maps or programs are for.
Wrappers are named as libbpf names them (`bpf_map_create`, `bpf_prog_load`,
...), take and return plain values and ctypes buffers, and raise `BPFError`
(or `PermissionDeniedError`) carrying the errno. Each attribute structure
covers only the fields gespann uses: the kernel zero-fills the rest of
`union bpf_attr`, which keeps the calls valid on older kernels.
"""
from __future__ import annotations

import ctypes
import enum
import errno
import functools
import os
import platform
import resource
from typing import Optional

from .errors import BPFError, PermissionDeniedError, describe_errno
from .fd import Fd

_SYSCALL_NUMBERS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # bpf, perf_event_open
try:
    NR_BPF, NR_PERF_EVENT_OPEN = _SYSCALL_NUMBERS[platform.machine()]
except KeyError:  # pragma: no cover - only the architectures above are supported
    raise ImportError(f"gespann.bpf does not know the syscall numbers of {platform.machine()}") from None

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

OBJ_NAME_LEN = 16


class Cmd(enum.IntEnum):
    """enum bpf_cmd (the commands gespann issues)."""
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_GET_INFO_BY_FD = 15
    BTF_LOAD = 18
    RAW_TRACEPOINT_OPEN = 17
    MAP_LOOKUP_AND_DELETE_ELEM = 21
    MAP_LOOKUP_BATCH = 24
    MAP_LOOKUP_AND_DELETE_BATCH = 25
    MAP_UPDATE_BATCH = 26
    MAP_DELETE_BATCH = 27
    LINK_CREATE = 28
    ENABLE_STATS = 32
    ITER_CREATE = 33


class MapType(enum.IntEnum):
    """enum bpf_map_type (the kinds gespann creates)."""
    HASH = 1
    ARRAY = 2
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    SK_STORAGE = 24
    RINGBUF = 27


class ProgType(enum.IntEnum):
    """enum bpf_prog_type (the tracing kinds)."""
    KPROBE = 2
    TRACEPOINT = 5
    RAW_TRACEPOINT = 17
    TRACING = 26


class AttachType(enum.IntEnum):
    """enum bpf_attach_type (those tracing programs use)."""
    NONE = 0
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    TRACE_ITER = 28
    PERF_EVENT = 41


class UpdateFlags(enum.IntFlag):
    """Flags of BPF_MAP_UPDATE_ELEM: ANY creates or replaces, NOEXIST only creates, EXIST only replaces."""
    ANY = 0
    NOEXIST = 1
    EXIST = 2
    LOCK = 4


BPF_F_NO_PREALLOC = 1 << 0
BPF_F_CURRENT_CPU = 0xFFFFFFFF

# Who may issue a command; CAP_SYS_ADMIN stands in for both (see errors.missing_capabilities).
NEEDS_BPF = ("CAP_BPF",)
_NEEDS_TRACING = ("CAP_BPF", "CAP_PERFMON")
_NEEDS = {Cmd.PROG_LOAD: _NEEDS_TRACING, Cmd.LINK_CREATE: _NEEDS_TRACING, Cmd.RAW_TRACEPOINT_OPEN: _NEEDS_TRACING,
          Cmd.ENABLE_STATS: ("CAP_SYS_ADMIN",)}


def address(buffer: Optional[ctypes.Array]) -> int:
    """The address of a ctypes buffer, 0 for None (a NULL pointer in bpf_attr)."""
    return 0 if buffer is None else ctypes.addressof(buffer)


def syscall_error(operation: str, err: int, needs: tuple[str, ...]) -> BPFError:
    """The error for a failed call: PermissionDeniedError naming `needs` for EPERM/EACCES, or
    CAP_SYS_RESOURCE when the process holds `needs` but RLIMIT_MEMLOCK, which kernels before
    5.11 charge BPF memory to, stayed limited (`_lift_memlock_limit` could not lift it)."""
    if err in (errno.EPERM, errno.EACCES):
        error = PermissionDeniedError(operation, needs, err)
        memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        if error.missing == [] and kernel_version_code() < 0x050B00 and memlock != resource.RLIM_INFINITY:
            return PermissionDeniedError(
                operation, ("CAP_SYS_RESOURCE",), err,
                note=f"kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, here {memlock} bytes: "
                     f"or raise it beforehand (systemd LimitMEMLOCK=infinity, ulimit -l unlimited)")
        return error
    return BPFError(f"{operation}: {describe_errno(err)}", err)


def bpf(cmd: Cmd, attr: ctypes.Structure) -> int:
    """Issue bpf(cmd, &attr, sizeof(attr)); the result, or BPFError with the errno.

    EINTR is retried, and EAGAIN for PROG_LOAD (the verifier gives up on a
    pending signal) a few times, as libbpf does. EACCES from PROG_LOAD is the
    verifier's verdict, so it stays a plain BPFError for the loader to explain.
    """
    eagain_retries = 5 if cmd == Cmd.PROG_LOAD else 0
    while True:
        ret = libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_int(cmd), ctypes.byref(attr),
                            ctypes.c_uint(ctypes.sizeof(attr)))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err == errno.EINTR:
            continue
        if err == errno.EAGAIN and eagain_retries:
            eagain_retries -= 1
            continue
        if cmd == Cmd.PROG_LOAD and err == errno.EACCES:
            raise BPFError(f"bpf(BPF_{cmd.name}): {describe_errno(err)}", err)
        raise syscall_error(f"bpf(BPF_{cmd.name})", err, _NEEDS.get(cmd, NEEDS_BPF))


def object_name(name: str) -> str:
    """A map or program name as the kernel keeps it: [A-Za-z0-9_.], cut to 15 characters as libbpf does."""
    if not name.isascii() or not all(c.isalnum() or c in "_." for c in name):
        raise ValueError(f"BPF object name {name!r}: use only [A-Za-z0-9_.]")
    return name[:OBJ_NAME_LEN - 1]


@functools.cache
def _lift_memlock_limit() -> None:
    """Kernels before 5.11 charge maps and programs to RLIMIT_MEMLOCK (later ones to the memory
    cgroup); lift the limit there once, as libbpf does, so EPERM means a missing capability."""
    if kernel_version_code() < 0x050B00:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except (OSError, ValueError):
            pass  # unprivileged: creating the object reports what is missing


# --- maps -------------------------------------------------------------------------------------

class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * OBJ_NAME_LEN),
                ("map_ifindex", ctypes.c_uint32), ("btf_fd", ctypes.c_uint32),
                ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32)]


class MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]  # value doubles as next_key


class MapBatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def bpf_map_create(map_type: MapType, key_size: int, value_size: int, max_entries: int,
                   flags: int = 0, name: str = "", btf: Optional[tuple[int, int, int]] = None) -> Fd:
    """A map; `btf` is (BTF fd, key type id, value type id) for the map types that need their types
    described (socket storage)."""
    attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                         max_entries=max_entries, map_flags=flags, map_name=object_name(name).encode())
    if btf is not None:
        attr.btf_fd, attr.btf_key_type_id, attr.btf_value_type_id = btf
    _lift_memlock_limit()
    return Fd(bpf(Cmd.MAP_CREATE, attr))


def _map_elem(cmd: Cmd, fd: int, key, value=None, flags: int = 0) -> int:
    return bpf(cmd, MapElemAttr(map_fd=fd, key=address(key), value=address(value), flags=flags))


def bpf_map_lookup_elem(fd: int, key: ctypes.Array, value: ctypes.Array, flags: int = 0) -> None:
    _map_elem(Cmd.MAP_LOOKUP_ELEM, fd, key, value, flags)


def bpf_map_update_elem(fd: int, key: ctypes.Array, value: ctypes.Array, flags: int = 0) -> None:
    _map_elem(Cmd.MAP_UPDATE_ELEM, fd, key, value, flags)


def bpf_map_delete_elem(fd: int, key: ctypes.Array) -> None:
    _map_elem(Cmd.MAP_DELETE_ELEM, fd, key)


def bpf_map_lookup_and_delete_elem(fd: int, key: ctypes.Array, value: ctypes.Array) -> None:
    _map_elem(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, fd, key, value)


def bpf_map_get_next_key(fd: int, key: Optional[ctypes.Array], next_key: ctypes.Array) -> None:
    """The key after `key` (the first key for None) into `next_key`; ENOENT after the last."""
    _map_elem(Cmd.MAP_GET_NEXT_KEY, fd, key, next_key)


def bpf_map_batch(cmd: Cmd, fd: int, count: int, keys: ctypes.Array, values: Optional[ctypes.Array] = None,
                  in_batch: Optional[ctypes.Array] = None, out_batch: Optional[ctypes.Array] = None,
                  elem_flags: int = 0) -> tuple[int, bool]:
    """One BPF_MAP_*_BATCH call: (elements processed, whether the map is exhausted).

    The kernel reports the end of a lookup with ENOENT, possibly after filling
    some elements, so that errno is an answer here, not an error.
    """
    attr = MapBatchAttr(in_batch=address(in_batch), out_batch=address(out_batch), keys=address(keys),
                        values=address(values), count=count, map_fd=fd, elem_flags=elem_flags)
    try:
        bpf(cmd, attr)
    except BPFError as e:
        if e.errno == errno.ENOENT and cmd in (Cmd.MAP_LOOKUP_BATCH, Cmd.MAP_LOOKUP_AND_DELETE_BATCH):
            return attr.count, True
        raise
    return attr.count, False


# --- programs ---------------------------------------------------------------------------------

class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_uint64),
                ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * OBJ_NAME_LEN), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("func_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("line_info_cnt", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32), ("attach_btf_obj_fd", ctypes.c_uint32),
                ("core_relo_cnt", ctypes.c_uint32), ("fd_array", ctypes.c_uint64),
                ("core_relos", ctypes.c_uint64), ("core_relo_rec_size", ctypes.c_uint32),
                ("log_true_size", ctypes.c_uint32)]  # out: 6.4+ reports the log size it needed


def kernel_version_code(release: Optional[str] = None) -> int:
    """LINUX_VERSION_CODE of the running kernel: kprobe programs needed it in kern_version before 5.0."""
    numbers = (release or os.uname().release).split("-")[0].split(".")
    major, minor, patch = (int("".join(ch for ch in n if ch.isdigit()) or 0) for n in (numbers + ["0", "0"])[:3])
    return major << 16 | minor << 8 | min(patch, 255)


def bpf_prog_load(prog_type: ProgType, insns: bytes, *, name: str = "", license: str = "GPL",
                  expected_attach_type: AttachType = AttachType.NONE, attach_btf_id: int = 0,
                  log: Optional[ctypes.Array] = None, log_level: int = 1) -> Fd:
    """Load `insns` (8 bytes each); with `log`, the verifier writes its report there (ENOSPC: too small)."""
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    license_buf = ctypes.create_string_buffer(license.encode())
    attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=address(code),
                        license=address(license_buf), kern_version=kernel_version_code(),
                        prog_name=object_name(name).encode(), expected_attach_type=expected_attach_type,
                        attach_btf_id=attach_btf_id)
    if log is not None:
        attr.log_level, attr.log_size, attr.log_buf = log_level, len(log), address(log)
    _lift_memlock_limit()
    return Fd(bpf(Cmd.PROG_LOAD, attr))


# --- object info ------------------------------------------------------------------------------

class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info, up to attach_btf_id."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
                ("name", ctypes.c_char * OBJ_NAME_LEN), ("ifindex", ctypes.c_uint32),
                ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
                ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
                ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
                ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
                ("verified_insns", ctypes.c_uint32), ("attach_btf_obj_id", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class BpfMapInfo(ctypes.Structure):
    """struct bpf_map_info, up to map_extra."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * OBJ_NAME_LEN),
                ("ifindex", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("btf_id", ctypes.c_uint32), ("btf_key_type_id", ctypes.c_uint32),
                ("btf_value_type_id", ctypes.c_uint32), ("btf_vmlinux_id", ctypes.c_uint32),
                ("map_extra", ctypes.c_uint64)]


def bpf_obj_get_info_by_fd(fd: int, info: ctypes.Structure) -> None:
    """Fill `info` (BpfProgInfo or BpfMapInfo, pointers in it set by the caller) for the object behind `fd`."""
    bpf(Cmd.OBJ_GET_INFO_BY_FD, InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)))


class EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


BPF_STATS_RUN_TIME = 0


def bpf_enable_stats(stats_type: int = BPF_STATS_RUN_TIME) -> Fd:
    """Have the kernel count every program's runs and run time until the returned fd closes."""
    return Fd(bpf(Cmd.ENABLE_STATS, EnableStatsAttr(type=stats_type)))


# --- BTF and iterators -----------------------------------------------------------------------

class BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", ctypes.c_uint64), ("btf_log_buf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32),
                ("btf_log_size", ctypes.c_uint32), ("btf_log_level", ctypes.c_uint32)]


def bpf_btf_load(blob: bytes, log: Optional[ctypes.Array] = None) -> Fd:
    """BTF of gespann's own types into the kernel (BPF_BTF_LOAD), for maps that must be described."""
    data = ctypes.create_string_buffer(blob, len(blob))
    attr = BtfLoadAttr(btf=address(data), btf_size=len(blob), btf_log_buf=address(log),
                       btf_log_size=len(log) if log is not None else 0, btf_log_level=1 if log is not None else 0)
    _lift_memlock_limit()
    return Fd(bpf(Cmd.BTF_LOAD, attr))


class IterCreateAttr(ctypes.Structure):
    _fields_ = [("link_fd", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


def bpf_iter_create(link_fd: int) -> Fd:
    """A new pass of an iterator link: reading the fd to its end runs the program on every element."""
    return Fd(bpf(Cmd.ITER_CREATE, IterCreateAttr(link_fd=link_fd)))


# --- attachment -------------------------------------------------------------------------------

class _IterInfo(ctypes.Structure):
    _fields_ = [("iter_info", ctypes.c_uint64), ("iter_info_len", ctypes.c_uint32)]


class _LinkTarget(ctypes.Union):
    _anonymous_ = ("iter",)
    _fields_ = [("target_btf_id", ctypes.c_uint32), ("perf_event_bpf_cookie", ctypes.c_uint64),
                ("iter", _IterInfo)]


class LinkCreateAttr(ctypes.Structure):
    _anonymous_ = ("target",)
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("target", _LinkTarget)]


class RawTracepointOpenAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32)]


class IterLinkInfo(ctypes.Structure):
    """union bpf_iter_link_info, as far as gespann uses it: the map an element iterator walks."""
    _fields_ = [("map_fd", ctypes.c_uint32)]


def bpf_link_create(prog_fd: int, target_fd: int, attach_type: AttachType, cookie: int = 0,
                    iter_map_fd: Optional[int] = None) -> Fd:
    """A bpf_link: on a perf event (target_fd, PERF_EVENT), or for a TRACING program on the BTF
    target it was loaded for (target_fd 0, its expected_attach_type); an iterator over a map's
    elements names the map (`iter_map_fd`)."""
    attr = LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd & 0xFFFFFFFF, attach_type=attach_type)
    attr.perf_event_bpf_cookie = cookie
    info = None
    if iter_map_fd is not None:
        info = IterLinkInfo(map_fd=iter_map_fd)
        attr.iter_info, attr.iter_info_len = ctypes.addressof(info), ctypes.sizeof(info)
    return Fd(bpf(Cmd.LINK_CREATE, attr))


def bpf_raw_tracepoint_open(name: Optional[str], prog_fd: int) -> Fd:
    """A raw tracepoint link by tracepoint name; None (NULL) attaches a TRACING program to the
    BTF target it was loaded for, which is how fentry and tp_btf attach before BPF_LINK_CREATE can."""
    name_buf = None if name is None else ctypes.create_string_buffer(name.encode())
    return Fd(bpf(Cmd.RAW_TRACEPOINT_OPEN, RawTracepointOpenAttr(name=address(name_buf), prog_fd=prog_fd)))
