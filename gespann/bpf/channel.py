"""RecordChannel: how a program sends records to user space, chosen for the running kernel.

A BPF ring buffer where the kernel has one (5.8+): one buffer for all CPUs,
records in commit order, no per-CPU memory. A perf event array otherwise, or
when `force_perf` asks for it. The channel owns the maps the program writes
to and reads the records back; the code that writes them is the probes'
(probes/record_output.py).
"""
from __future__ import annotations

from . import features
from .fd import Closable
from .maps import Map, PerCpuArrayMap, PerfEventArrayMap, RingBufMap
from .perfbuf import PerfBufReader
from .reader import RecordReader
from .ringbuf import RingBufReader, lost_counter_map
from .syscall import OBJ_NAME_LEN

#: Room for bursts the reader cannot follow at once: a 4 MiB ring holds about 30,000 connection records
#: (128 bytes and an 8-byte header each), over half a second at the highest rate measured here (53,000
#: records a second, tools/bench.py's soak), where 1 MiB lost records whenever the reader was held off the
#: CPU for a fifth of a second. The config's events.ringbuf_bytes sets it.
RINGBUF_SIZE = 4 << 20
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
        self.reader: RecordReader
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
    def for_reader(cls, reader: str, name: str = "events", ringbuf_size: int = RINGBUF_SIZE) -> "RecordChannel":
        """The channel the config's `events.reader` asks for: "auto", "ringbuf" (an error where the
        kernel has none) or "perf"; a ring buffer of `ringbuf_size` bytes (events.ringbuf_bytes)."""
        if reader == "ringbuf":
            features.ringbuf().require()
        return cls(name, ringbuf_size=ringbuf_size, force_perf=reader == "perf")

    @property
    def maps(self) -> dict[str, Map]:
        """The maps to pass to `load_program` for the code `emit_record_output` writes."""
        maps = {self.name: self.map}
        if self._lost_counter is not None:
            maps[self.lost_name] = self._lost_counter
        return maps

    def _close_maps(self) -> None:
        for m in self.maps.values():
            m.close()

    def close(self) -> None:
        """Close the reader first: the perf reader takes its events out of the map."""
        if hasattr(self, "reader"):
            self.reader.close()
        self._close_maps()
