"""The TCP aggregates kept in the kernel: one per-CPU row of u64 slots, and the code that bumps them.

Every counter, histogram bucket and histogram sum is a slot of one per-CPU
array element, so a probe finds all of them with a single map lookup and
updates each with one atomic add at a constant (or bounded) offset. The cost
per event is fixed; user space reads the row once per collection and sums the
CPUs. The layout here is the one contract between the probes that write the
row and the collector that reads it.

Histogram buckets are powers of two microseconds: bucket i holds values in
(2^(i-1), 2^i] µs (bucket 0 everything up to 1 µs), the last one everything
above 2^(BOUNDS-1) µs. The bucket is the bit length of ceil(value) - 1, found
with six shifts, no loop. Sums are exact, in the unit the value was read in.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from asm import DW, R0, R1, R2, R3, R10, Program, Record, Register, Slot, array, u8, u64

from ...bpf.maps import PerCpuArrayMap, StructCodec
from ...vocabulary import BUCKET_BOUNDS_US, FAILURE_REASONS, RESET_DIRECTIONS, ROLES

#: Bucket bounds (vocabulary.BUCKET_BOUNDS_US), then +Inf. Failures with a name of their own have a slot
#: each; any other errno is counted per errno in a hash map.
BOUNDS = len(BUCKET_BOUNDS_US)


@dataclass(frozen=True)
class HistogramSlots:
    """A histogram in the row: BOUNDS + 1 bucket slots from `first`, then the sum slot."""

    first: int
    #: Seconds per unit of the observed value (and of the sum): 1e-9 for ns, 1e-6 for µs.
    unit: float

    @property
    def sum(self) -> int:
        return self.first + BOUNDS + 1

    @property
    def end(self) -> int:
        return self.sum + 1


class Totals:
    """Slot numbers in the row, in one place for the probes and the collector."""

    OPENED = 0  # + role
    CLOSED = OPENED + len(ROLES)  # + role
    RESET = CLOSED + len(ROLES)  # + direction
    FAILED = RESET + len(RESET_DIRECTIONS)  # + index in FAILURE_REASONS
    BYTES_SENT = FAILED + len(FAILURE_REASONS)
    BYTES_RECEIVED = BYTES_SENT + 1
    RETRANSMITS = BYTES_RECEIVED + 1
    RTT = HistogramSlots(RETRANSMITS + 1, 1e-6)  # smoothed RTT, µs
    DURATION = HistogramSlots(RTT.end, 1e-9)  # ESTABLISHED to end, ns
    CONNECT_LATENCY = HistogramSlots(DURATION.end, 1e-9)  # SYN_SENT to ESTABLISHED, ns
    UNTRACKED = CONNECT_LATENCY.end  # ends (and failed opens) that came without their connection's entry
    SLOTS = UNTRACKED + 1


#: Map names, and what their keys and values hold: tcp_lifecycle writes them, tcp_metrics reads them.
FAILURE_ERRNOS = dict(zip(FAILURE_REASONS, (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                                            errno.ENETUNREACH)))

STATS = "tcp_totals"
FAILED_ERRNOS = "tcp_failed_errnos"
BY_PROCESS = "tcp_by_process"
#: Owners the kernel tells apart per label set the config allows (labels.max_series): one label set can be
#: several owners (a comm in several cgroups, say). Past that, owners count under OTHER_OWNER.
OWNERS_PER_SERIES = 4
#: The by-process map's key: the owner's cgroup id and comm. OTHER_OWNER stands for every owner past the cap.
OWNER = Record("tcp_owner", [("cgroup_id", u64), ("comm", array(u8, 16))])
OTHER_OWNER = {"cgroup_id": (1 << 64) - 1, "comm": bytes(16)}
#: The by-process map's value: ends by outcome (connection_records.OUTCOMES), then payload bytes.
BY_PROCESS_COUNTS = StructCodec("=5Q")
BYTES_SENT_SLOT, BYTES_RECEIVED_SLOT = 3, 4


def by_process_capacity(max_series: int) -> int:
    """Owners the by-process map keeps for `labels.max_series` label sets, OTHER_OWNER's row included."""
    return OWNERS_PER_SERIES * max_series + 1


ROW = StructCodec(f"={Totals.SLOTS}Q")


def stats_map() -> PerCpuArrayMap:
    return PerCpuArrayMap(ROW, 1, name="gsp_tcp_stats")


def emit_row_pointer(p: Program, stats: str, dst: Register, key: Slot, missing: str) -> None:
    """Emit `dst = &stats[0]`, jumping to `missing` if the lookup fails (it cannot for an array).

    `key` is a free 8-byte stack slot. Clobbers R0-R5.
    """
    p.st(DW, R10, key.at(), 0)
    p.ld_map(R1, stats)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")
    p.jeq(R0, 0, missing)
    p.mov(dst, R0)


def emit_add(p: Program, row: Register, slot: int, value: Register | int) -> None:
    """Emit `row[slot] += value`; an immediate goes through R1 (clobbered)."""
    if isinstance(value, int):
        p.mov(R1, value)
        value = R1
    p.atomic_add(DW, row, 8 * slot, value)


def emit_add_indexed(p: Program, row: Register, first: int, index: Register, count: int, value: int,
                     skip: str) -> None:
    """Emit `row[first + index] += value` for 0 <= index < count; jumps to `skip` otherwise.

    The bound check is what lets the verifier accept the variable offset. Clobbers R1-R3.
    """
    p.jge(index, count, skip)
    p.mov(R2, index)
    p.lsh(R2, 3)
    p.mov(R3, row)
    p.add(R3, R2)
    p.mov(R1, value)
    p.atomic_add(DW, R3, 8 * first, R1)


def emit_observe(p: Program, row: Register, histogram: HistogramSlots, value: Register) -> None:
    """Emit an observation of `value` (in `histogram.unit`): one bucket count and the sum.

    Clobbers R1-R3; `value` is kept.
    """
    p.atomic_add(DW, row, 8 * histogram.sum, value)
    # R1 = ceil(value in µs) - 1, as an unsigned bit pattern whose bit length is the bucket.
    per_us = round(1e-6 / histogram.unit)
    p.mov(R1, value)
    if per_us > 1:
        p.add(R1, per_us - 1)
        p.div(R1, per_us)
    p.mov(R2, 0)
    zero = p.new_label("observe.zero")
    p.jeq(R1, 0, zero)
    p.sub(R1, 1)
    p.label(zero)
    for shift in (32, 16, 8, 4, 2, 1):
        narrower = p.new_label(f"observe.{shift}")
        p.mov(R3, R1)
        p.rsh(R3, shift)
        p.jeq(R3, 0, narrower)
        p.mov(R1, R3)
        p.add(R2, shift)
        p.label(narrower)
    p.add(R2, R1)  # R1 is now 0 or 1: the last bit
    clamped = p.new_label("observe.clamped")
    p.jle(R2, BOUNDS, clamped)
    p.mov(R2, BOUNDS)
    p.label(clamped)
    p.lsh(R2, 3)
    p.mov(R3, row)
    p.add(R3, R2)
    p.mov(R1, 1)
    p.atomic_add(DW, R3, 8 * histogram.first, R1)


def emit_saturating_sub(p: Program, value: Register, amount: Register) -> None:
    """Emit `value -= amount`, but never below 0 (clobbers `amount`)."""
    done = p.new_label("sub")
    p.jge(value, amount, done)
    p.mov(amount, value)
    p.label(done)
    p.sub(value, amount)
