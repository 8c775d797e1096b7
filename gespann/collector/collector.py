"""KernelCollector: a Snapshot of every catalogue metric, read from the attached probes when asked.

Nothing runs between collections: the kernel keeps the aggregates, and a
snapshot reads the maps and the open connections at the moment an exporter
asks. Connection events come from a record channel, when the probes were
attached with one (`gespann trace`, or an event exporter).
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

from .. import __version__
from ..bpf.channel import EventChannel
from ..probes import ProbeSet
from .catalogue import CATALOGUE
from .model import ConnectionEvent, Metric, Snapshot, labels
from .open_sockets import OpenSockets
from .records import ConnectionRecords
from .tcp import TcpMetrics


class KernelCollector:
    """The `Collector` over an attached `ProbeSet` with tcp_lifecycle in it.

    `netns_path` is the network namespace the probes are scoped to (None: gespann's own),
    where open connections are looked up. `records` is the channel the probes
    were attached with, if any: without one there are no events.
    """

    def __init__(self, probes: ProbeSet, netns_path: Optional[str] = None, *,
                 records: Optional[EventChannel] = None, idle_timeout: float = 60.0):
        self._probes = probes
        self._open_sockets = OpenSockets(netns_path)
        self._tcp = TcpMetrics(probes["tcp_lifecycle"], self._open_sockets, idle_timeout)
        self._records = ConnectionRecords(records) if records is not None else None

    def snapshot(self) -> Snapshot:
        series = self._tcp.series()
        if self._records is not None:
            series["records_lost_total"] = {labels(reader=self._records.channel.kind): self._records.lost}
        series["probe_info"] = {labels(probe=name, mode=attached.flavour.mode): 1
                                for name, attached in self._probes.probes.items()}
        series["build_info"] = {labels(version=__version__): 1}
        return Snapshot(time.time(), {spec.name: Metric(spec.name, spec.kind, spec.help, series.get(spec.name, {}))
                                      for spec in CATALOGUE})

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        """The connections that ended since the last call, waiting up to `timeout` seconds for one.
        Without a record channel there are none, after waiting out `timeout`."""
        if self._records is None:
            time.sleep(timeout)
            return iter(())
        return iter(self._records.read(timeout))

    def close(self) -> None:
        self._open_sockets.close()

    def __enter__(self) -> "KernelCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
