"""The interface shared by the ring buffer and perf buffer readers.

A reader hands over each record as `bytes`, in the order the kernel
committed it (per CPU for perf buffers), and counts the records the kernel
could not deliver in `lost`.
"""
from __future__ import annotations

import abc
import select
from typing import Callable, Iterator

from .errors import BPFError
from .fd import Closable


class RecordReader(Closable, abc.ABC):
    """Records from a kernel buffer: `poll()` with a callback, `read()`, or iterate `records()`."""

    kind: str  # "ringbuf" or "perf"

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
            try:
                self._epoll.poll(-1 if timeout_ms < 0 else timeout_ms / 1000)
            except OSError as e:
                raise BPFError(f"waiting for {self.kind} records: {e.strerror}", e.errno) from None
            records = self._drain()
        return records

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
