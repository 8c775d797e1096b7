"""KernelCollector: a Snapshot of every catalogue metric, read from the attached probes when asked.

Nothing runs between collections: the kernel keeps the aggregates, and a
snapshot reads the maps and the open connections at the moment an exporter
asks. Connection events come from a record channel, when the probes were
attached with one (`gespann trace`, an event exporter, or per-process labels).

Per-process counts (opt-in labels) need no records: TCP ends are counted per
owner in the kernel, UDP flows end in user space. Records are taken from the
channel by whichever thread asks first, under one lock: an exporter's snapshot
or an event consumer. Events wait in a bounded backlog once a consumer has asked for
them; what overflows it is counted as lost, like what overflows the kernel's
buffer.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from typing import Iterator, Optional

from .. import __version__
from ..bpf.channel import EventChannel
from ..probes import ProbeSet
from .by_process import ByProcess, LabelSettings
from ..probes.tcp_lifecycle import BY_PROCESS
from .catalogue import CATALOGUE
from .containers import Cgroups
from .model import ConnectionEvent, Metric, Snapshot, labels
from .open_sockets import OpenSockets
from .records import ConnectionRecords
from .tcp import TcpMetrics
from .udp import UdpMetrics


class KernelCollector:
    """The `Collector` over an attached `ProbeSet`: TCP figures where tcp_lifecycle is in it, UDP
    figures where udp_send is (`scope.protocols` may leave either out).

    `netns_path` is the network namespace the probes are scoped to (None: gespann's own),
    where open connections are looked up. `records` is the channel the probes
    were attached with, if any: without one there are no events. Per-process
    labels (`label_settings`) need tcp_lifecycle attached with by-process counts
    (AttachSettings.by_process), where TCP is watched.
    """

    #: Events kept for a consumer that has not come back for them yet.
    BACKLOG = 65536
    #: Least seconds between two reads of the UDP flow map for ended flows, between collections.
    UDP_EXPIRY_INTERVAL = 1.0

    def __init__(self, probes: ProbeSet, netns_path: Optional[str] = None, *,
                 records: Optional[EventChannel] = None, idle_timeout: float = 60.0,
                 udp_flow_timeout: float = 120.0, label_settings: LabelSettings = LabelSettings()):
        self._probes = probes
        watches_tcp = "tcp_lifecycle" in probes.probes
        self._owners = probes["tcp_lifecycle"].maps.get(BY_PROCESS) if watches_tcp else None
        if label_settings.enabled and watches_tcp and self._owners is None:
            raise ValueError("per-process labels need tcp_lifecycle attached with by-process counts")
        self._open_sockets = OpenSockets(netns_path) if watches_tcp else None
        self._tcp = (TcpMetrics(probes["tcp_lifecycle"], self._open_sockets, idle_timeout, probes.tcp_walk,
                                netns_path) if watches_tcp else None)
        # One resolver of cgroup ids to container ids for TCP records, UDP flows' events and the labels.
        self._cgroups = Cgroups() if records is not None or label_settings.container else None
        container_of = self._cgroups.container_id if self._cgroups is not None else None
        self._udp = (UdpMetrics(probes["udp_send"], idle_timeout, udp_flow_timeout, walk=probes.udp_walk,
                                container_of=container_of)
                     if "udp_send" in probes.probes else None)
        self._udp_expired_at = 0.0
        self._records = ConnectionRecords(records, self._cgroups) if records is not None else None
        self._by_process = ByProcess(label_settings, self._cgroups) if label_settings.enabled else None
        self._lock = threading.Lock()
        self._backlog: deque[ConnectionEvent] = deque()
        self._backlog_lost = 0
        self._events_wanted = False

    def snapshot(self) -> Snapshot:
        series = self._tcp.series() if self._tcp is not None else {}
        if self._udp is not None:
            for name, udp_series in self._udp.series().items():
                series.setdefault(name, {}).update(udp_series)
        if self._by_process is not None:
            if self._owners is not None:
                self._by_process.set_tcp_owners(self._owners.items())
            self._take_records(expire_udp=True, scan_udp=False)
            series.update(self._by_process.series())
        if self._records is not None:
            lost = {labels(reader=self._records.channel.kind): self._records.lost}
            backlog_lost = self._backlog_lost + (self._udp.events_dropped if self._udp is not None else 0)
            if backlog_lost:
                lost[labels(reader="backlog")] = backlog_lost
            series["records_lost_total"] = lost
        elif self._udp is not None and self._by_process is None:
            self._udp.expired_events(scan=False)  # nobody takes events: let the ended flows' go
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
        self._events_wanted = True
        if not self._backlog and timeout > 0:
            select.select([self._records.channel.reader.fileno()], [], [], timeout)
        self._take_records(expire_udp=time.monotonic() - self._udp_expired_at >= self.UDP_EXPIRY_INTERVAL)
        with self._lock:
            events = list(self._backlog)
            self._backlog.clear()
        return iter(events)

    def _take_records(self, expire_udp: bool = False, scan_udp: bool = True) -> None:
        """Records waiting in the kernel's buffer (and with `expire_udp`, UDP flows just ended; `scan_udp`
        False: those the last read found) into the backlog, once a consumer asked for events, and UDP's into
        the per-process counts (TCP's are the kernel's)."""
        with self._lock:
            events = self._records.read(0) if self._records is not None else []
            if expire_udp and self._udp is not None:
                self._udp_expired_at = time.monotonic()
                events.extend(self._udp.expired_events(scan=scan_udp))
            for event in events:
                if self._by_process is not None and event.protocol != "tcp":
                    self._by_process.add(event)
                if self._events_wanted:
                    if len(self._backlog) < self.BACKLOG:
                        self._backlog.append(event)
                    else:
                        self._backlog_lost += 1

    def close(self) -> None:
        if self._open_sockets is not None:
            self._open_sockets.close()

    def __enter__(self) -> "KernelCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
