"""The UDP probes, as one unit: they share the flow map, so they are attached in the same ProbeSet."""

from __future__ import annotations

from ..toolkit.probe import Probe
from . import receive as udp_receive
from . import send as udp_send

UDP_PROBES: tuple[Probe, ...] = (udp_send.PROBE, udp_receive.PROBE)
