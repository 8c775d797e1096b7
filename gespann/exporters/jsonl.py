"""The jsonl exporter: every connection event appended to a file as one JSON line.

The file is opened for appending (a restart adds to it). Each batch of events
the collector hands over is written in one write, so a line is in the file as
soon as its batch is (within milliseconds), at one system call per batch rather
than per line; `close()` writes out the events still waiting in the collector,
then closes the file.

A batch the file cannot take (a full disk, an I/O error) is dropped whole and
counted (`jsonl_unwritten_total`), so the file holds whole lines only and the
reader of it can tell what is missing. gespann keeps running and serving its
metrics; the failure is logged once when it starts and once when writing works
again, not once per batch.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterable, Optional

from gespann.collector import Collector, ConnectionEvent, Kind, Metric
from gespann.settings import text

from .base import ExporterError
from .events import json_line
from .kinds import REQUIRED, ExporterKind, Setting

log = logging.getLogger(__name__)

UNWRITTEN_HELP = ("Connection records the jsonl exporter could not write to its file (a full disk, an I/O error): "
                  "a batch the file cannot take is left out whole, so the file holds whole lines only.")


class JsonlExporter:
    def __init__(self, collector: Collector, path: str, *, wait: float = 0.5):
        self.path = Path(path)
        self._collector = collector
        self._wait = wait  # seconds one read waits for an event: also how long close() may wait for the reader
        self._fd: Optional[int] = None
        self._unwritten = 0
        self._problem: Optional[str] = None  # why the last batch was not written; None while batches are
        self._lock = threading.Lock()  # one batch at a time: the thread's, write()'s or close()'s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ExporterError(f"jsonl: cannot open {self.path} for appending: {err.strerror}") from None
        self._thread = threading.Thread(target=self._copy_events, name="gespann-jsonl", daemon=True)
        self._thread.start()

    def write(self, event: ConnectionEvent) -> None:
        self.write_batch((event,))

    def write_batch(self, events: Iterable[ConnectionEvent]) -> None:
        """Every event as one JSON line, in one write; a batch that cannot be written is counted, not raised."""
        lines = [f"{json_line(event)}\n" for event in events]
        if not lines:
            return
        with self._lock:
            try:
                self._append("".join(lines).encode("utf-8"))
            except OSError as err:
                self._unwritten += len(lines)
                self._failed(err)
            else:
                self._succeeded()

    def unwritten(self) -> int:
        """Records left out of the file since start."""
        return self._unwritten

    def self_metrics(self) -> Iterable[Metric]:
        return (Metric("jsonl_unwritten_total", Kind.COUNTER, UNWRITTEN_HELP, {(): self._unwritten}),)

    def close(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        self._thread.join()
        self.write_batch(self._collector.events(timeout=0))
        os.close(self._fd)
        self._fd = self._thread = None
        if self._unwritten:
            log.warning("jsonl: %d connection records could not be written to %s", self._unwritten, self.path)

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def _append(self, data: bytes) -> None:
        """All of `data` or none of it: a write the disk cuts short is taken back. A pipe or a character
        device cannot be cut back; their writes block rather than stop half-way."""
        try:
            end = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:
            end = None
        view, written = memoryview(data), 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written and end is not None:
                os.ftruncate(self._fd, end)
            raise

    def _failed(self, err: OSError) -> None:
        problem = err.strerror or str(err)
        if problem != self._problem:
            log.error("jsonl: cannot write to %s: %s; counting the records left out (jsonl_unwritten_total) "
                      "until it can", self.path, problem)
        self._problem = problem

    def _succeeded(self) -> None:
        if self._problem is not None:
            log.info("jsonl: writing to %s again; %d records left out so far", self.path, self._unwritten)
        self._problem = None

    def _copy_events(self) -> None:
        while not self._stop.is_set():
            self.write_batch(self._collector.events(timeout=self._wait))


KIND = ExporterKind("jsonl", "connection records as JSON lines, the same as `gespann trace --json`", settings=(
    Setting("path", text("a file path"), "the file appended to", REQUIRED),
), build=lambda settings, context: JsonlExporter(context.collector, settings["path"]), consumes_events=True)
