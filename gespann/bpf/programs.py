"""Loading programs into the kernel, with the verifier's report when it refuses one.

A program comes from an `asm.Program` (its map names are resolved to the fds
of the maps passed in) or as raw instruction bytes. The first attempt loads
without a log, which is fastest; a failure is repeated with a log buffer,
grown while the kernel says it is too small, so a `VerifierError` always
carries the whole report.
"""
from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from . import features, syscall
from .errors import BPFError, FeatureUnsupportedError, PermissionDeniedError, VerifierError, describe_errno
from .fd import Closable, Fd
from .maps import Map
from .syscall import AttachType, ProgType

_LOG_SIZE_FIRST = 64 * 1024
_LOG_SIZE_MAX = (1 << 24) - 1  # UINT_MAX >> 8: the largest log every kernel accepts

#: Attach types whose programs run from a BPF trampoline.
TRAMPOLINE_ATTACH_TYPES = (AttachType.TRACE_FENTRY, AttachType.TRACE_FEXIT)


@dataclass(frozen=True)
class ProgramInfo:
    """What the kernel reports of a loaded program (BPF_OBJ_GET_INFO_BY_FD).

    run_cnt and run_time_ns count only while statistics are on: see `enable_run_stats`.
    """
    id: int
    name: str
    type: ProgType
    tag: str
    run_cnt: int
    run_time_ns: int
    jited_prog_len: int
    xlated_prog_len: int
    verified_insns: int
    map_ids: tuple[int, ...]


def enable_run_stats() -> Fd:
    """Count run_cnt and run_time_ns of every program until the returned Fd closes (`with` it).

    BPF_ENABLE_STATS (5.8+) leaves the kernel.bpf_stats_enabled sysctl alone
    and ends with this process, so a crash cannot leave the overhead on.
    """
    try:
        return syscall.bpf_enable_stats()
    except BPFError as e:
        if e.errno == errno.EINVAL:
            raise FeatureUnsupportedError("BPF_ENABLE_STATS", "5.8", e.errno) from None
        raise


class LoadedProgram(Closable):
    """A program in the kernel, kept alive by its fd (and by any link attaching it).

    `verifier_log` holds the verifier's report when a log was asked for. A
    TRACING program keeps what it was loaded for (`expected_attach_type`,
    `attach_btf_id`): that is where it attaches.
    """

    def __init__(self, fd: Fd, name: str, prog_type: ProgType, verifier_log: str = "", *,
                 expected_attach_type: AttachType = AttachType.NONE, attach_btf_id: int = 0):
        self.fd, self.name, self.type, self.verifier_log = fd, name, prog_type, verifier_log
        self.expected_attach_type, self.attach_btf_id = expected_attach_type, attach_btf_id

    def info(self) -> ProgramInfo:
        raw = syscall.BpfProgInfo()
        syscall.bpf_obj_get_info_by_fd(int(self.fd), raw)
        map_ids = (ctypes.c_uint32 * raw.nr_map_ids)()
        if raw.nr_map_ids:
            count, raw = raw.nr_map_ids, syscall.BpfProgInfo(nr_map_ids=raw.nr_map_ids,
                                                              map_ids=ctypes.addressof(map_ids))
            syscall.bpf_obj_get_info_by_fd(int(self.fd), raw)
            map_ids = map_ids[:min(count, raw.nr_map_ids)]
        return ProgramInfo(raw.id, raw.name.decode(), ProgType(raw.type), bytes(raw.tag).hex(), raw.run_cnt,
                           raw.run_time_ns, raw.jited_prog_len, raw.xlated_prog_len, raw.verified_insns,
                           tuple(map_ids))

    def recursion_misses(self) -> int:
        """Runs the kernel skipped because the program was already running on that CPU (an interrupt or
        softirq firing its event inside it): their events went uncounted. 5.12+; 0 before."""
        raw = syscall.BpfProgInfo()
        syscall.bpf_obj_get_info_by_fd(int(self.fd), raw)
        return raw.recursion_misses

    def close(self) -> None:
        self.fd.close()

    def __repr__(self) -> str:
        return f"LoadedProgram({self.name!r}, {self.type.name}, fd={self.fd!r})"


def load_program(source: Any, prog_type: ProgType = ProgType.TRACEPOINT, *,
                 maps: Optional[Mapping[str, Union[Map, int]]] = None, name: Optional[str] = None,
                 license: str = "GPL", expected_attach_type: AttachType = AttachType.NONE,
                 attach_btf_id: int = 0, log_level: int = 0) -> LoadedProgram:
    """Load `source`, an `asm.Program` or raw instruction bytes.

    `maps` gives each map name the program references a Map (or an fd).
    `expected_attach_type` and `attach_btf_id` are for TRACING programs:
    TRACE_FENTRY or TRACE_FEXIT with a kernel function's BTF id, TRACE_RAW_TP
    with the id of a tracepoint's btf_trace_<name> typedef. With `log_level`
    1 or 2 the verifier's report is kept even on success (2 adds
    per-instruction state). A kernel that refuses fentry/fexit outright raises
    FeatureUnsupportedError, not PermissionDeniedError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        insns, name = bytes(source), name or ""
    else:
        fds = {map_name: m if isinstance(m, int) else int(m.fd) for map_name, m in (maps or {}).items()}
        insns, name = source.assemble(maps=fds), name or source.name
    if not insns or len(insns) % 8:
        raise ValueError(f"program {name!r}: {len(insns)} bytes are not whole 8-byte instructions")
    name = syscall.object_name(name)
    load = dict(name=name, license=license, expected_attach_type=expected_attach_type,
                attach_btf_id=attach_btf_id)
    try:
        fd, log = _load(prog_type, insns, log_level, load)
    except PermissionDeniedError as e:
        if expected_attach_type in TRAMPOLINE_ATTACH_TYPES:
            refusal = features.trampoline_refusal(
                f"loading {expected_attach_type.name} program {name!r} (BTF id {attach_btf_id})", e)
            if refusal is not None:
                raise refusal from None
        raise
    return LoadedProgram(fd, name, prog_type, log, expected_attach_type=expected_attach_type,
                         attach_btf_id=attach_btf_id)


def _load(prog_type: ProgType, insns: bytes, log_level: int, load: dict) -> tuple[Fd, str]:
    """Load without a log, the fastest way, unless a log is asked for; after a failure, load again
    for the verifier's report."""
    if not log_level:
        try:
            return syscall.bpf_prog_load(prog_type, insns, **load), ""
        except PermissionDeniedError:
            raise
        except BPFError:
            log_level = 1
    return _load_with_log(prog_type, insns, log_level, load)


def _load_with_log(prog_type: ProgType, insns: bytes, log_level: int, load: dict) -> tuple[Fd, str]:
    """Load with a verifier log buffer, grown while the kernel says ENOSPC (it did not fit)."""
    name, size = load["name"], _LOG_SIZE_FIRST
    while True:
        log = ctypes.create_string_buffer(size)
        try:
            return syscall.bpf_prog_load(prog_type, insns, log=log, log_level=log_level, **load), _text(log)
        except PermissionDeniedError:
            raise
        except BPFError as e:
            if e.errno == errno.ENOSPC and size < _LOG_SIZE_MAX:
                size = min(size * 4, _LOG_SIZE_MAX)
                continue
            if _text(log):
                raise VerifierError(name, e.errno, _text(log)) from None
            raise BPFError(f"loading program {name!r} ({prog_type.name}): {describe_errno(e.errno)}",
                           e.errno) from None


def _text(log: ctypes.Array) -> str:
    return log.value.decode(errors="replace")
