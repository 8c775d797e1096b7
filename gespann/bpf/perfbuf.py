"""Reading a perf event array: the per-CPU buffers bpf_perf_event_output() writes to.

One software event (PERF_COUNT_SW_BPF_OUTPUT) per online CPU, its fd stored
in the PerfEventArrayMap at that CPU's index, its ring mmapped: a header page
(data_head written by the kernel, data_tail by us) and 2^n data pages.
Records (struct perf_event_header: u32 type, u16 misc, u16 size) may wrap
around the end of the data area. A SAMPLE carries a u32 size and the raw
bytes, zero-padded so the record stays 8-byte aligned (the padding is part of
what the reader returns; decode records by their known size). A LOST record
says how many samples the kernel dropped while the ring was full; it is
written once space frees up, before the next sample.
"""
from __future__ import annotations

import struct

from . import perf_event
from .cpus import online_cpus
from .errors import BPFError
from .maps import PerfEventArrayMap
from .memory import PAGE_SIZE, PROT_READ, PROT_WRITE, MemoryMapping
from .perf_event import PerfEventAttr
from .reader import RecordReader

# Offsets in struct perf_event_mmap_page.
_DATA_HEAD, _DATA_TAIL, _DATA_OFFSET, _DATA_SIZE = 1024, 1032, 1040, 1048
_HEADER = struct.Struct("=IHH")
_SAMPLE_SIZE = struct.Struct("=I")
_LOST = struct.Struct("=QQ")  # id, lost


class _CpuRing:
    """One CPU's perf event and its mmapped ring."""

    def __init__(self, cpu: int, pages: int):
        attr = PerfEventAttr(type=perf_event.PERF_TYPE_SOFTWARE, config=perf_event.PERF_COUNT_SW_BPF_OUTPUT,
                             sample_type=perf_event.PERF_SAMPLE_RAW, sample_period=1, wakeup_events=1)
        self.cpu, self.fd = cpu, perf_event.perf_event_open(attr, pid=-1, cpu=cpu)
        try:
            self.ring = MemoryMapping(int(self.fd), PAGE_SIZE * (1 + pages), PROT_READ | PROT_WRITE)
        except BaseException:
            self.fd.close()
            raise
        # data_offset/data_size are 0 before 4.1: the data then starts at the second page.
        self.data_offset = self.ring.u64(_DATA_OFFSET) or PAGE_SIZE
        self.data_size = self.ring.u64(_DATA_SIZE) or PAGE_SIZE * pages

    def _read(self, position: int, length: int) -> bytes:
        """`length` bytes at ring `position`, joined across the end of the data area."""
        start = position % self.data_size
        first = min(length, self.data_size - start)
        data = self.ring.read(self.data_offset + start, first)
        return data + self.ring.read(self.data_offset, length - first) if first < length else data

    def drain(self, records: list[bytes]) -> int:
        """Append the samples waiting in the ring to `records`; the number of samples lost."""
        lost = 0
        head, tail = self.ring.u64(_DATA_HEAD), self.ring.u64(_DATA_TAIL)
        while tail < head:
            record_type, _, size = _HEADER.unpack(self._read(tail, _HEADER.size))
            if size < _HEADER.size:
                raise BPFError(f"perf buffer of CPU {self.cpu}: corrupt record of {size} bytes")
            body = self._read(tail + _HEADER.size, size - _HEADER.size)
            if record_type == perf_event.PERF_RECORD_SAMPLE:
                (raw_size,) = _SAMPLE_SIZE.unpack_from(body)
                records.append(body[_SAMPLE_SIZE.size:_SAMPLE_SIZE.size + raw_size])
            elif record_type == perf_event.PERF_RECORD_LOST:
                lost += _LOST.unpack_from(body)[1]
            tail += size
        self.ring.set_u64(_DATA_TAIL, tail)
        return lost

    def close(self) -> None:
        self.ring.close()
        self.fd.close()


class PerfBufReader(RecordReader):
    """Records from a PerfEventArrayMap, `pages_per_cpu` (a power of two) data pages per CPU."""

    kind = "perf"

    def __init__(self, array: PerfEventArrayMap, pages_per_cpu: int = 8):
        if pages_per_cpu < 1 or pages_per_cpu & (pages_per_cpu - 1):
            raise ValueError(f"pages_per_cpu is a power of two, not {pages_per_cpu}")
        super().__init__()
        self._array, self._rings, self._lost = array, [], 0
        try:
            for cpu in online_cpus():
                ring = _CpuRing(cpu, pages_per_cpu)
                self._rings.append(ring)
                array[cpu] = int(ring.fd)
                perf_event.perf_event_ioctl(int(ring.fd), perf_event.PERF_EVENT_IOC_ENABLE)
                self._watch(int(ring.fd))
        except BaseException:
            self.close()
            raise

    @property
    def lost(self) -> int:
        return self._lost

    def _drain(self) -> list[bytes]:
        records: list[bytes] = []
        for ring in self._rings:
            self._lost += ring.drain(records)
        return records

    def close(self) -> None:
        """Detach the events from the map (it holds a reference to each) and free them."""
        super().close()
        for ring in self._rings:
            try:
                if not self._array.fd.closed:
                    del self._array[ring.cpu]
            except BPFError:
                pass  # never stored: set-up failed before this CPU's entry
            ring.close()
        self._rings = []
