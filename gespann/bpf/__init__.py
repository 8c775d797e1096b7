"""gespann.bpf: the kernel interface: bpf(2) and perf_event_open(2) through ctypes.

It knows system calls, not connections, and writes no program code (that is the probes'): maps, programs, attachment to
tracepoints, kprobes and BTF targets (fentry, fexit, tp_btf), probes of what
the kernel supports (`features`), and the buffers records come back through.
Every object holding an fd releases it on `close()` or at the end of a `with`
block, and then nothing of it stays in the kernel. Errors are `BPFError`s
saying what to do.
"""
from .channel import RecordChannel
from .cpus import online_cpus, possible_cpus
from .errors import (
                     BPFError,
                     FeatureUnsupportedError,
                     KeyNotFoundError,
                     PermissionDeniedError,
                     SymbolNotFoundError,
                     TracepointNotFoundError,
                     VerifierError,
)
from .features import FeatureStatus, has_perf_link, has_ringbuf
from .links import (
                     AttachMode,
                     KprobeSource,
                     Link,
                     attach_fentry,
                     attach_fexit,
                     attach_kprobe,
                     attach_raw_tracepoint,
                     attach_tp_btf,
                     attach_tracepoint,
)
from .maps import (
                     U32,
                     U64,
                     ArrayMap,
                     HashMap,
                     KeyValueMap,
                     LruHashMap,
                     LruPerCpuHashMap,
                     Map,
                     MapInfo,
                     PerCpuArrayMap,
                     PerCpuHashMap,
                     PerfEventArrayMap,
                     RingBufMap,
                     StructCodec,
)
from .perfbuf import PerfBufReader
from .programs import LoadedProgram, ProgramInfo, enable_run_stats, load_program
from .pt_regs import PT_REGS_ARG_OFFSETS, PT_REGS_RETURN_OFFSET, PtRegsLayout, pt_regs_layout
from .reader import RecordReader
from .ringbuf import RingBufReader, lost_counter_map
from .syscall import AttachType, MapType, ProgType, UpdateFlags
from .tracefs import TracepointField, TracepointFormat, read_format, tracefs_root

__all__ = [
    "RecordChannel", "online_cpus", "possible_cpus",
    "BPFError", "FeatureUnsupportedError", "KeyNotFoundError", "PermissionDeniedError",
    "SymbolNotFoundError", "TracepointNotFoundError", "VerifierError",
    "FeatureStatus", "has_perf_link", "has_ringbuf",
    "AttachMode", "KprobeSource", "Link", "attach_fentry", "attach_fexit", "attach_kprobe", "attach_raw_tracepoint",
    "attach_tp_btf", "attach_tracepoint",
    "U32", "U64", "ArrayMap", "HashMap", "KeyValueMap", "LruHashMap", "LruPerCpuHashMap", "Map", "MapInfo",
    "PerCpuArrayMap", "PerCpuHashMap", "PerfEventArrayMap", "RingBufMap", "StructCodec",
    "PerfBufReader", "LoadedProgram", "ProgramInfo", "enable_run_stats", "load_program",
    "PT_REGS_ARG_OFFSETS", "PT_REGS_RETURN_OFFSET", "PtRegsLayout", "pt_regs_layout", "RecordReader",
    "RingBufReader", "lost_counter_map",
    "AttachType", "MapType", "ProgType", "UpdateFlags",
    "TracepointField", "TracepointFormat", "read_format", "tracefs_root",
]
