"""KernelCollector: a Snapshot of every catalogue metric, read from the attached probes when asked.

Nothing runs between collections: the kernel keeps the aggregates, and a
snapshot reads the maps and the open connections at the moment an exporter
asks. Metrics gespann does not measure yet (UDP, idle connections,
connection records) are in the snapshot with no series.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

from .. import __version__
from ..probes import ProbeSet
from .catalogue import CATALOGUE
from .model import ConnectionEvent, Metric, Snapshot, labels
from .open_sockets import OpenSockets
from .tcp import TcpMetrics


class KernelCollector:
    """The `Collector` over an attached `ProbeSet` with tcp_lifecycle in it.

    `netns_path` is the network namespace the probes are scoped to (None: gespann's own),
    where open connections are looked up.
    """

    def __init__(self, probes: ProbeSet, netns_path: Optional[str] = None):
        self._probes = probes
        self._open_sockets = OpenSockets(netns_path)
        self._tcp = TcpMetrics(probes["tcp_lifecycle"], self._open_sockets)

    def snapshot(self) -> Snapshot:
        series = self._tcp.series()
        series["probe_info"] = {labels(probe=name, mode=attached.flavour.mode): 1
                                for name, attached in self._probes.probes.items()}
        series["build_info"] = {labels(version=__version__): 1}
        return Snapshot(time.time(), {spec.name: Metric(spec.name, spec.kind, spec.help, series.get(spec.name, {}))
                                      for spec in CATALOGUE})

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        """No per-connection records yet: nothing, after waiting out `timeout`."""
        time.sleep(timeout)
        return iter(())

    def close(self) -> None:
        self._open_sockets.close()

    def __enter__(self) -> "KernelCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
