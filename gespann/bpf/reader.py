"""The interface shared by the ring buffer and perf buffer readers.

A reader hands over each record as `bytes`, in the order the kernel
committed it (per CPU for perf buffers), and counts the records the kernel
could not deliver in `lost`.
"""
from __future__ import annotations

import abc
import select
import time
from typing import Callable, Iterator

from .errors import BPFError
from .fd import Closable

#: How long records gather after a read took some, before the reader waits on the kernel again. A
#: reader that waits at once is woken for nearly every record (the ring buffer notifies a consumer that
#: has caught up, and a perf buffer every event), and the wakeup costs the program writing the record
#: several microseconds. Coming back later, it finds a batch, woken once for it; each wakeup also costs
#: the reader tens of microseconds of its own (measured: 19 µs per record at 4,000 records a second
#: with 5 ms, 14.5 µs with 20 ms). 20 ms is a delay no reader of a trace notices, and at the highest
#: rates measured (35,000 records a second) a gather fills under a tenth of the 1 MiB ring buffer.
GATHER_S = 0.02


class RecordReader(Closable, abc.ABC):
    """Records from a kernel buffer: `poll()` with a callback, `read()`, or iterate `records()`."""

    kind: str  # "ringbuf" or "perf"
    _taken_at = float("-inf")  # when a read last took records (time.monotonic)

    def __init__(self) -> None:
        try:
            self._epoll = select.epoll()
        except OSError as e:
            raise BPFError(f"epoll_create for a {self.kind} reader: {e.strerror}", e.errno) from None

    @abc.abstractmethod
    def _drain(self) -> list[bytes]:
        """Take every committed record out of the buffer, advancing the consumer position."""

    @property
    @abc.abstractmethod
    def lost(self) -> int:
        """Records the kernel dropped because the buffer was full, since the reader opened."""

    def _watch(self, fd: int) -> None:
        try:
            self._epoll.register(fd, select.EPOLLIN)
        except OSError as e:
            raise BPFError(f"epoll_ctl for a {self.kind} reader: {e.strerror}", e.errno) from None

    def read(self, timeout_ms: int = 0) -> list[bytes]:
        """The records available now; if none, wait up to `timeout_ms` (-1: forever) for some."""
        records = self._drain()
        if not records and timeout_ms != 0:
            self.wait(-1 if timeout_ms < 0 else timeout_ms / 1000)
            records = self._drain()
        if records:
            self._taken_at = time.monotonic()
        return records

    def wait(self, timeout_s: float) -> None:
        """Return once records are waiting, or `timeout_s` (negative: no limit) has passed; within
        GATHER_S of the last records taken, that long is waited out first."""
        if timeout_s != 0:
            gather = self._taken_at + GATHER_S - time.monotonic()
            if gather > 0:
                pause = gather if timeout_s < 0 else min(gather, timeout_s)
                time.sleep(pause)
                timeout_s = timeout_s if timeout_s < 0 else timeout_s - pause
        try:
            self._epoll.poll(timeout_s if timeout_s < 0 else max(timeout_s, 0.0))
        except OSError as e:
            raise BPFError(f"waiting for {self.kind} records: {e.strerror}", e.errno) from None

    def poll(self, timeout_ms: int, callback: Callable[[bytes], None]) -> int:
        """Pass each record available (waiting as `read` does) to `callback`; the number passed.
        Records are consumed before the callback runs, so one that raises is not delivered again."""
        records = self.read(timeout_ms)
        for record in records:
            callback(record)
        return len(records)

    def records(self, timeout_ms: int = 100) -> Iterator[bytes]:
        """Yield records until none arrives within `timeout_ms`."""
        while batch := self.read(timeout_ms):
            yield from batch

    def fileno(self) -> int:
        """An fd that polls readable when records wait, for an outside event loop."""
        return self._epoll.fileno()

    def close(self) -> None:
        self._epoll.close()
