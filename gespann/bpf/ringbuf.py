"""Reading a BPF ring buffer (5.8+), and counting the records a program could not put in it.

Layout, as the kernel maps it: the consumer page (position we have read up
to, ours to write) at offset 0; from one page on, the producer page (position
the kernel has reserved up to) and then the data pages, mapped twice in a row
so a record that wraps around the end still reads as one span. Each record
starts with an 8-byte header: a u32 length whose top bits say BUSY (reserved,
not yet committed: stop there) and DISCARD (skip it), then a u32 page offset.
Records are 8-byte aligned.

The kernel counts nothing when a program's `ringbuf_reserve` (or
`ringbuf_output`) fails. The convention here: the program bumps a per-CPU
counter (probes/record_output.py writes that code), and the reader's `lost` sums it.
"""
from __future__ import annotations

import struct

from .maps import U64, PerCpuArrayMap, RingBufMap
from .memory import PAGE_SIZE, PROT_READ, PROT_WRITE, MemoryMapping
from .reader import RecordReader

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER_SIZE = 8
_U32, _U64 = struct.Struct("=I").unpack_from, struct.Struct("=Q").unpack_from


def lost_counter_map(name: str) -> PerCpuArrayMap:
    """The counter a program bumps for each record the ring had no room for: one u64 per CPU at index 0."""
    return PerCpuArrayMap(U64, 1, name=name)


class RingBufReader(RecordReader):
    """Records from a RingBufMap; `lost` reads the program's lost counter if one is given."""

    kind = "ringbuf"

    def __init__(self, ring: RingBufMap, lost_counter: PerCpuArrayMap | None = None):
        super().__init__()
        fd, self._size, self._lost_counter = int(ring.fd), ring.max_entries, lost_counter
        self._consumer = MemoryMapping(fd, PAGE_SIZE, PROT_READ | PROT_WRITE)
        try:
            self._producer = MemoryMapping(fd, PAGE_SIZE + 2 * self._size, PROT_READ, offset=PAGE_SIZE)
            self._data = self._producer.view()
            self._watch(fd)
        except BaseException:
            self.close()
            raise

    @property
    def lost(self) -> int:
        return sum(self._lost_counter[0]) if self._lost_counter is not None else 0

    def _drain(self) -> list[bytes]:
        """Every committed record, copied out. The producer page and the data are read through a
        memoryview (a record costs a struct unpack and a slice, not ctypes calls); aligned 4- and 8-byte
        loads, which x86-64 makes atomic and keeps in order."""
        records: list[bytes] = []
        data, consumer, mask = self._data, self._consumer.u64(0), self._size - 1
        while consumer < (producer := _U64(data, 0)[0]):
            try:
                while consumer < producer:
                    at = PAGE_SIZE + (consumer & mask)
                    header = _U32(data, at)[0]
                    if header & BUSY_BIT:
                        return records
                    length = header & ~(BUSY_BIT | DISCARD_BIT)
                    if not header & DISCARD_BIT:
                        start = at + HEADER_SIZE
                        records.append(data[start:start + length].tobytes())
                    consumer += (length + HEADER_SIZE + 7) & ~7
            finally:  # once per batch: the kernel sees the room freed when the batch is taken
                self._consumer.set_u64(0, consumer)
        return records

    def close(self) -> None:
        super().close()
        data = getattr(self, "_data", None)
        if data is not None:
            data.release()
            self._data = None
        for mapping in (getattr(self, "_producer", None), self._consumer):
            if mapping is not None:
                mapping.close()
