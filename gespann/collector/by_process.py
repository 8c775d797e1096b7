"""Per-process and per-container counts: opt-in labels, capped so the series stay bounded.

The host-wide metrics carry bounded labels only. Which process or container a
connection belonged to is known where it ends:
- TCP ends are counted by the kernel as they happen, per owner (cgroup id and
  comm: the TCP probe's by-process map), exact at any rate; a collection reads
  those rows, a bounded number;
- UDP flows end in user space (idle expiry), with the process that first sent.
The cgroup id gives the container id. The first `max_series` label sets each
get a series; connections of any later one are counted under `other`, as are
owners past the kernel map's own cap, so a host with thousands of short-lived
processes still exposes at most `max_series + 1` series per metric. A label set
keeps its series once it has one, so every series only goes up.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from ..figures import ConnectionEvent, Labels, Value, labels
from ..probes.toolkit.reading import OwnerCounts
from ..vocabulary import OTHER
from .containers import Cgroups

log = logging.getLogger(__name__)

#: The label value that stands for every label set beyond the cap.


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

    def __init__(self, settings: LabelSettings, cgroups: Optional[Cgroups] = None):
        self.settings = settings
        self._cgroups = cgroups if cgroups is not None else (Cgroups() if settings.container else None)
        self._admitted: set[tuple[str, str]] = set()
        self._owners: dict[tuple[int, str, bool], tuple[str, str]] = {}  # kernel owner -> its label set, for good
        self._connections: Counter = Counter()  # from events (UDP)
        self._bytes: Counter = Counter()
        self._kernel_connections: Counter = Counter()  # from the kernel's rows, read whole each time
        self._kernel_bytes: Counter = Counter()
        self._kernel_cap_logged = False

    def add(self, event: ConnectionEvent) -> None:
        """A connection that ended in user space's view (a UDP flow); TCP ends come from `set_owners`."""
        container = event.container_id or self._container(event.cgroup_id)
        who = self._who(event.comm, container)
        self._connections[(*who, event.protocol, event.outcome)] += 1
        self._bytes[(*who, event.protocol, "sent")] += event.bytes_sent
        self._bytes[(*who, event.protocol, "received")] += event.bytes_received

    def set_owners(self, rows: Iterable[OwnerCounts]) -> None:
        """Ends counted in the kernel per owner, as read now (whole: they replace the last read's)."""
        connections, payload = Counter(), Counter()
        for row in rows:
            key = (row.cgroup_id, row.comm, row.other)
            who = self._owners.get(key)
            if who is None:
                if row.other:
                    who = self._other()
                    self._log_kernel_cap()
                else:
                    who = self._who(row.comm, self._container(row.cgroup_id))
                self._owners[key] = who
            for outcome, count in row.outcomes.items():
                if count:
                    connections[(*who, row.protocol, outcome)] += count
            payload[(*who, row.protocol, "sent")] += row.bytes_sent
            payload[(*who, row.protocol, "received")] += row.bytes_received
        self._kernel_connections, self._kernel_bytes = connections, payload

    def _log_kernel_cap(self) -> None:
        if not self._kernel_cap_logged:
            self._kernel_cap_logged = True
            log.warning("tcp: more connection owners (cgroup and comm) than the kernel's by-process map holds: "
                        "later ones count under '%s'; raising labels.max_series raises that map too", OTHER)

    def _container(self, cgroup_id: int) -> str:
        return self._cgroups.container_id(cgroup_id) if self._cgroups is not None and cgroup_id else ""

    def _who(self, comm: str, container: str) -> tuple[str, str]:
        who = (comm if self.settings.process else "", container if self.settings.container else "")
        if who in self._admitted:
            return who
        if len(self._admitted) < self.settings.max_series:
            self._admitted.add(who)
            return who
        return self._other()

    def _other(self) -> tuple[str, str]:
        return (OTHER if self.settings.process else "", OTHER if self.settings.container else "")

    def series(self) -> dict[str, dict[Labels, Value]]:
        connections = self._connections + self._kernel_connections
        payload = Counter(self._bytes)
        payload.update(self._kernel_bytes)
        return {
            "process_connections_total": {
                labels(comm=comm, container=container, protocol=protocol, outcome=outcome): n
                for (comm, container, protocol, outcome), n in connections.items()},
            "process_bytes_total": {
                labels(comm=comm, container=container, protocol=protocol, direction=direction): n
                for (comm, container, protocol, direction), n in payload.items()},
        }
