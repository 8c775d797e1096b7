"""Everything a probe author imports, from one module: `from gespann.probes.authoring import ...`.

A probe is one file: where it attaches (flavours), the program (the asm DSL),
its maps, the metrics it declares and the reader that turns its maps into
their series at each collection. gespann's own probes are written with the
same names; the modules behind them may move between releases, this one
keeps its names. docs/writing-a-probe.md walks through an example.

The groups:
  the program     Program, registers R0-R10, sizes B H W DW, Record and its field types, Slot
  the probe       Probe, BuildTarget, Arguments, Arg, the flavours, the socket state-change event;
                  event_fields: which arguments an event passes on the running kernel;
                  FeatureUnsupportedError, for a flavour the kernel cannot build (the next one is tried)
  kernel memory   emit_read_field, emit_read_bytes (offsets from the running kernel's BTF)
  packets         emit_packet_netns_check, emit_ip_protocol, emit_read_transport_header
  kernel types    KernelNeeds, FieldRef: what a probe reads or attaches to beyond gespann's manifest (Probe(kernel=...))
  maps            map types and codecs, UpdateFlags, emit_map_lookup/update/delete, emit_increment, emit_zero
  scope           emit_netns_check: only the namespace the config scopes gespann to
  capped counts   emit_capped_count, capped_count_maps, read_capped_counts, OTHER
  figures         counter, gauge, histogram, MetricSpec, labels, Series, Histogram
  reading         Reader, ReadContext
"""

from __future__ import annotations

from asm import (
    DW,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    B,
    H,
    Program,
    Record,
    Register,
    Slot,
    W,
    array,
    s8,
    s16,
    s32,
    s64,
    u8,
    u16,
    u32,
    u64,
)

from ..bpf.errors import FeatureUnsupportedError
from ..bpf.maps import (
    U32,
    U64,
    ArrayMap,
    HashMap,
    LruHashMap,
    PerCpuArrayMap,
    PerCpuHashMap,
    StructCodec,
)
from ..bpf.syscall import UpdateFlags
from ..btf.manifest import FieldRef, KernelNeeds
from ..figures import Histogram, MetricSpec, Series, counter, gauge, histogram, labels
from ..vocabulary import OTHER
from .toolkit import socket_state
from .toolkit.arguments import Arg, Arguments
from .toolkit.capped_count import capped_count_maps, emit_capped_count, read_capped_counts
from .toolkit.flavours import BtfTracepoint, Fentry, Flavour, Kprobe, RawTracepoint, Tracepoint, event_fields
from .toolkit.kernel_memory import emit_read_bytes, emit_read_field
from .toolkit.map_calls import emit_increment, emit_map_delete, emit_map_lookup, emit_map_update
from .toolkit.netns import emit_netns_check
from .toolkit.packets import emit_ip_protocol, emit_packet_netns_check, emit_read_transport_header
from .toolkit.probe import BuildTarget, Probe
from .toolkit.reading import ReadContext, Reader
from .toolkit.record_codec import RecordCodec
from .toolkit.stack import emit_zero

__all__ = [
    # the program
    "B", "DW", "H", "W", "R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10",
    "Program", "Record", "Register", "Slot", "array", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64",
    # the probe
    "Arg", "Arguments", "BtfTracepoint", "BuildTarget", "Fentry", "Flavour", "Kprobe", "Probe", "RawTracepoint",
    "Tracepoint", "event_fields", "socket_state",
    "FeatureUnsupportedError",
    # kernel memory
    "emit_read_bytes", "emit_read_field",
    # packets
    "emit_ip_protocol", "emit_packet_netns_check", "emit_read_transport_header",
    # kernel types
    "FieldRef", "KernelNeeds",
    # maps
    "U32", "U64", "ArrayMap", "HashMap", "LruHashMap", "PerCpuArrayMap", "PerCpuHashMap", "RecordCodec",
    "StructCodec", "UpdateFlags", "emit_increment", "emit_map_delete", "emit_map_lookup", "emit_map_update",
    "emit_zero",
    # scope
    "emit_netns_check",
    # capped counts
    "OTHER", "capped_count_maps", "emit_capped_count", "read_capped_counts",
    # figures
    "Histogram", "MetricSpec", "Series", "counter", "gauge", "histogram", "labels",
    # reading
    "ReadContext", "Reader",
]
