"""Connection records from the kernel, decoded into ConnectionEvents by the probe that sent them.

A probe that sends records declares their decoder (Probe.records); this reads
the channel's waiting records and turns each into the event the exporters
print. Times arrive on the kernel's monotonic clock and leave as wall-clock
seconds. Records the kernel could not deliver are counted by the channel's
reader and reported as `records_lost_total`.
"""

from __future__ import annotations

import time
from typing import Optional

from ..bpf.channel import RecordChannel
from ..figures import ConnectionEvent
from ..probes import RecordDecoder
from .containers import Cgroups


def wall_clock_offset() -> float:
    """Seconds to add to a CLOCK_MONOTONIC reading (ktime_get_ns) to get wall-clock time."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


class ConnectionRecords:
    """The events arriving on one channel, decoded by the decoder of the probe that sends them."""

    def __init__(self, channel: RecordChannel, decode: RecordDecoder, cgroups: Optional[Cgroups] = None):
        self.channel = channel
        self._decode = decode
        self._container_of = (cgroups if cgroups is not None else Cgroups()).container_id

    @property
    def lost(self) -> int:
        return self.channel.reader.lost

    def read(self, timeout: float) -> list[ConnectionEvent]:
        """The events waiting now; if none, those arriving within `timeout` seconds."""
        raw = self.channel.reader.read(int(timeout * 1000) if timeout > 0 else 0)
        offset, decode, container_of = wall_clock_offset(), self._decode, self._container_of
        return [decode(data, offset, container_of) for data in raw]
