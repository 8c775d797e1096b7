"""The jsonl exporter: every connection event appended to a file as one JSON line.

The file is opened for appending (a restart adds to it). Each batch of events
the collector hands over is written in one write and flushed, so a line is in
the file as soon as its batch is (within milliseconds), at one system call per
batch rather than per line; `close()` writes out the events still waiting in
the collector, then flushes and closes the file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable, Optional, TextIO

from gespann.collector import Collector, ConnectionEvent
from gespann.settings import text

from .base import ExporterError
from .events import json_line
from .kinds import REQUIRED, ExporterKind, Setting

log = logging.getLogger(__name__)


class JsonlExporter:
    def __init__(self, collector: Collector, path: str, *, wait: float = 0.5):
        self.path = Path(path)
        self._collector = collector
        self._wait = wait  # seconds one read waits for an event: also how long close() may wait for the reader
        self._file: Optional[TextIO] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        try:
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as err:
            raise ExporterError(f"jsonl: cannot open {self.path} for appending: {err.strerror}") from None
        self._thread = threading.Thread(target=self._copy_events, name="gespann-jsonl", daemon=True)
        self._thread.start()

    def write(self, event: ConnectionEvent) -> None:
        self.write_batch((event,))

    def write_batch(self, events: Iterable[ConnectionEvent]) -> None:
        """Every event as one JSON line, in one write, flushed."""
        lines = "".join(f"{json_line(event)}\n" for event in events)
        if lines:
            self._file.write(lines)
            self._file.flush()

    def close(self) -> None:
        if self._file is None:
            return
        self._stop.set()
        self._thread.join()
        self.write_batch(self._collector.events(timeout=0))
        self._file.close()
        self._file = self._thread = None

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def _copy_events(self) -> None:
        while not self._stop.is_set():
            try:
                self.write_batch(self._collector.events(timeout=self._wait))
            except OSError as err:  # a full disk must not end the copying for good
                log.error("jsonl: cannot write to %s: %s", self.path, err.strerror)
                self._stop.wait(self._wait)


KIND = ExporterKind("jsonl", "connection records as JSON lines, the same as `gespann trace --json`", settings=(
    Setting("path", text("a file path"), "the file appended to", REQUIRED),
), build=lambda settings, context: JsonlExporter(context.collector, settings["path"]), consumes_events=True)
