"""Per-process and per-container counts: opt-in labels, capped so the series stay bounded.

The host-wide metrics carry bounded labels only. Which process or container a
connection belonged to is known from its record (connection_records), so these
counts are built from the record stream, only when the config asks for them.
The first `max_series` label sets each get a series; connections of any later
one are counted under `other`, so a host with thousands of short-lived
processes still exposes at most `max_series + 1` series per metric.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .model import ConnectionEvent, Labels, Value, labels

#: The label value that stands for every label set beyond the cap.
OTHER = "other"


@dataclass(frozen=True)
class LabelSettings:
    process: bool = False  # label by comm
    container: bool = False  # label by container id ("" outside containers)
    max_series: int = 100

    @property
    def enabled(self) -> bool:
        return self.process or self.container


class ByProcess:
    """Ended connections and their payload bytes, by process and/or container, capped."""

    def __init__(self, settings: LabelSettings):
        self.settings = settings
        self._admitted: set[tuple[str, str]] = set()
        self._connections: Counter = Counter()
        self._bytes: Counter = Counter()

    def add(self, event: ConnectionEvent) -> None:
        who = self._who(event)
        self._connections[(*who, event.protocol, event.outcome)] += 1
        self._bytes[(*who, event.protocol, "sent")] += event.bytes_sent
        self._bytes[(*who, event.protocol, "received")] += event.bytes_received

    def _who(self, event: ConnectionEvent) -> tuple[str, str]:
        who = (event.comm if self.settings.process else "", event.container_id if self.settings.container else "")
        if who in self._admitted:
            return who
        if len(self._admitted) < self.settings.max_series:
            self._admitted.add(who)
            return who
        return (OTHER if self.settings.process else "", OTHER if self.settings.container else "")

    def series(self) -> dict[str, dict[Labels, Value]]:
        return {
            "process_connections_total": {
                labels(comm=comm, container=container, protocol=protocol, outcome=outcome): n
                for (comm, container, protocol, outcome), n in self._connections.items()},
            "process_bytes_total": {
                labels(comm=comm, container=container, protocol=protocol, direction=direction): n
                for (comm, container, protocol, direction), n in self._bytes.items()},
        }
