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

import logging
import threading
import time
from collections import deque
from typing import Iterator, Optional

from .. import __version__
from ..bpf.channel import RecordChannel
from ..figures import ConnectionEvent, labels
from ..probes import ProbeSet, ReadContext, Reader
from .by_process import ByProcess, LabelSettings
from .catalogue import catalogue
from .containers import Cgroups
from .declarations import DeclaredSeries
from .model import Metric, Snapshot
from .records import ConnectionRecords

log = logging.getLogger(__name__)


class KernelCollector:
    """The `Collector` over an attached `ProbeSet`: each probe's reader gives its series, merged by metric.

    `netns_path` is the network namespace the probes are scoped to (None: gespann's own),
    where open connections are looked up. `records` is the channel the probes
    were attached with, if any: without one there are no events. Per-process
    labels (`label_settings`) need the probes attached with by-process counts
    (AttachSettings.by_process).
    """

    #: Events kept for a consumer that has not come back for them yet.
    BACKLOG = 65536
    #: Least seconds between two reads for connections user space ends (UDP flows), between collections.
    EXPIRY_INTERVAL = 1.0

    def __init__(self, probes: ProbeSet, netns_path: Optional[str] = None, *,
                 records: Optional[RecordChannel] = None, idle_timeout: float = 60.0,
                 udp_flow_timeout: float = 120.0, label_settings: LabelSettings = LabelSettings()):
        self._probes = probes
        self._catalogue = catalogue(attached.probe for attached in probes.probes.values())
        # One resolver of cgroup ids to container ids for TCP records, UDP flows' events and the labels.
        self._cgroups = Cgroups() if records is not None or label_settings.container else None
        container_of = self._cgroups.container_id if self._cgroups is not None else None
        self._readers: list[Reader] = []
        self._declared: list[DeclaredSeries] = []
        try:
            for name, attached in probes.probes.items():
                if attached.probe.reader is not None:
                    self._readers.append(attached.probe.reader(ReadContext(
                        attached, probes.walks.get(name), netns_path, idle_timeout, udp_flow_timeout,
                        container_of, label_settings.enabled)))
                    self._declared.append(DeclaredSeries(attached.probe))
        except BaseException:
            self.close()
            raise
        self._expired_at = 0.0
        self._records = (ConnectionRecords(records, _record_decoder(probes), self._cgroups) if records is not None
                         else None)
        self._by_process = ByProcess(label_settings, self._cgroups) if label_settings.enabled else None
        self._lock = threading.Lock()
        self._backlog: deque[ConnectionEvent] = deque()
        self._backlog_lost = 0
        self._said_ring_full = False
        self._events_wanted = False

    def snapshot(self) -> Snapshot:
        series: dict[str, dict] = {}
        for reader, declared in zip(self._readers, self._declared):
            for name, reader_series in declared.check(reader.series()).items():
                series.setdefault(name, {}).update(reader_series)
        if self._by_process is not None:
            self._by_process.set_owners(owner for reader in self._readers for owner in reader.owners())
            self._take_records(expire=True, scan=False)
            series.update(self._by_process.series())
        if self._records is not None:
            lost = {labels(reader=self._records.channel.kind): self._records.lost}
            self._say_ring_full(self._records.lost)
            backlog_lost = self._backlog_lost + sum(reader.events_dropped for reader in self._readers)
            if backlog_lost:
                lost[labels(reader="backlog")] = backlog_lost
            series["records_lost_total"] = lost
        elif self._by_process is None:
            for reader in self._readers:
                reader.ended(scan=False)  # nobody takes events: let those of the connections just ended go
        series["probe_info"] = {labels(probe=name, mode=attached.flavour.mode): 1
                                for name, attached in self._probes.probes.items()}
        series["probe_runs_missed_total"] = {
            labels(probe=name): sum(program.recursion_misses() for program in attached.programs)
            for name, attached in self._probes.probes.items()}
        series["build_info"] = {labels(version=__version__): 1}
        return Snapshot(time.time(), {spec.name: Metric.of(spec, series.get(spec.name, {}))
                                      for spec in self._catalogue})

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        """The connections that ended since the last call, waiting up to `timeout` seconds for one.
        Without a record channel there are none, after waiting out `timeout`."""
        if self._records is None:
            time.sleep(timeout)
            return iter(())
        self._events_wanted = True
        if not self._backlog and timeout > 0:
            self._records.channel.reader.wait(timeout)
        self._take_records(expire=time.monotonic() - self._expired_at >= self.EXPIRY_INTERVAL)
        with self._lock:
            events = list(self._backlog)
            self._backlog.clear()
        return iter(events)

    def _take_records(self, expire: bool = False, scan: bool = True) -> None:
        """Records waiting in the kernel's buffer (and with `expire`, connections user space just ended;
        `scan` False: those the last read found) into the backlog, once a consumer asked for events, and
        those user space ended into the per-process counts (the kernel counts the others)."""
        with self._lock:
            events = self._records.read(0) if self._records is not None else []
            ended: list[ConnectionEvent] = []
            if expire:
                self._expired_at = time.monotonic()
                for reader in self._readers:
                    ended.extend(reader.ended(scan=scan))
            if self._by_process is not None:
                for event in ended:
                    self._by_process.add(event)
            if self._events_wanted:
                arrived = [*events, *ended] if ended else events
                room = max(0, self.BACKLOG - len(self._backlog))
                self._backlog.extend(arrived[:room])
                self._backlog_lost += max(0, len(arrived) - room)

    def _say_ring_full(self, lost: int) -> None:
        """Once, the first time the kernel's buffer had no room for a record: the count is in the metric,
        and for the ring buffer the key that makes it larger."""
        if lost and not self._said_ring_full:
            self._said_ring_full = True
            remedy = "; events.ringbuf_bytes makes the ring larger" if self._records.channel.kind == "ringbuf" else ""
            log.warning("connection records lost: the kernel's %s buffer was full while the reader fell behind "
                        "(counted in gespann_records_lost_total)%s", self._records.channel.kind, remedy)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> "KernelCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record_decoder(probes: ProbeSet):
    """The decoder of the records on the channel: that of the one attached probe that sends records."""
    senders = [attached for attached in probes.probes.values() if attached.probe.records is not None]
    if len(senders) > 1:
        raise ValueError(f"a record channel carries the records of one probe; "
                         f"{', '.join(a.probe.name for a in senders)} would each send theirs")
    if not senders:
        return _no_records
    return senders[0].probe.records(senders[0].target)


def _no_records(data: bytes, *_) -> ConnectionEvent:
    raise ValueError(f"a record of {len(data)} bytes arrived, but no attached probe sends records")
