"""RecordChannel: how a program sends records to user space, chosen for the running kernel.

A BPF ring buffer where the kernel has one (5.8+): one buffer for all CPUs,
records in commit order, no per-CPU memory. A perf event array otherwise, or
when `force_perf` asks for it. The channel owns the maps the program writes
to, writes the output code into the program, and reads the records back.
"""
from __future__ import annotations

from asm import R0, R1, R2, R3, R4, R5, R10, Program, Register, Slot

from . import features
from .fd import Closable
from .maps import Map, PerCpuArrayMap, PerfEventArrayMap, RingBufMap
from .perfbuf import PerfBufReader
from .reader import EventReader
from .ringbuf import RingBufReader, emit_count_lost, lost_counter_map
from .syscall import BPF_F_CURRENT_CPU, OBJ_NAME_LEN


#: Room for bursts the reader cannot follow at once: a 1 MiB ring holds about 8,700 connection
#: records, a quarter of a second at the highest rate measured here (30,000 records/s, tools/bench.py).
RINGBUF_SIZE = 1 << 20
PERF_PAGES_PER_CPU = 32


class RecordChannel(Closable):
    """The maps and reader of one record stream; `kind` is "ringbuf" or "perf"."""

    def __init__(self, name: str = "events", *, ringbuf_size: int = RINGBUF_SIZE,
                 perf_pages_per_cpu: int = PERF_PAGES_PER_CPU, force_perf: bool = False):
        self.name = name
        self.lost_name = f"{name[:OBJ_NAME_LEN - 6]}_lost"
        self._lost_counter: PerCpuArrayMap | None = None
        perf = force_perf or not features.has_ringbuf()
        self.kind = "perf" if perf else "ringbuf"
        self.map: Map = PerfEventArrayMap(name=name) if perf else RingBufMap(ringbuf_size, name=name)
        self.reader: EventReader
        try:
            if perf:
                self.reader = PerfBufReader(self.map, perf_pages_per_cpu)
            else:
                self._lost_counter = lost_counter_map(self.lost_name)
                self.reader = RingBufReader(self.map, self._lost_counter)
        except BaseException:
            self._close_maps()
            raise

    @classmethod
    def for_reader(cls, reader: str, name: str = "events") -> "RecordChannel":
        """The channel the config's `events.reader` asks for: "auto", "ringbuf" (an error where the
        kernel has none) or "perf"."""
        if reader == "ringbuf":
            features.ringbuf().require()
        return cls(name, force_perf=reader == "perf")

    @property
    def maps(self) -> dict[str, Map]:
        """The maps to pass to `load_program` for the code `emit_output` writes."""
        maps = {self.name: self.map}
        if self._lost_counter is not None:
            maps[self.lost_name] = self._lost_counter
        return maps

    def emit_output(self, p: Program, ctx: Register, record: Slot) -> None:
        """Emit code sending the stack slot `record` (its `size` bytes) as one record.

        `ctx` holds the program's context (perf output needs it). Clobbers
        R0-R5. On the ring buffer, a record that does not fit is counted in the
        lost counter, whose key is written over the record's first 4 bytes.
        """
        if self.kind == "perf":
            p.mov(R1, ctx)
            p.ld_map(R2, self.name)
            p.mov32(R3, BPF_F_CURRENT_CPU)  # a 32-bit move: no sign extension into the flag bits
            p.mov(R4, R10)
            p.add(R4, record.at())
            p.mov(R5, record.size)
            p.call("perf_event_output")
            return
        sent = p.new_label(f"{self.name}.sent")
        p.ld_map(R1, self.name)
        p.mov(R2, R10)
        p.add(R2, record.at())
        p.mov(R3, record.size)
        p.mov(R4, 0)
        p.call("ringbuf_output")
        p.jeq(R0, 0, sent)
        emit_count_lost(p, self.lost_name, record)
        p.label(sent)

    def _close_maps(self) -> None:
        for m in self.maps.values():
            m.close()

    def close(self) -> None:
        """Close the reader first: the perf reader takes its events out of the map."""
        if hasattr(self, "reader"):
            self.reader.close()
        self._close_maps()
