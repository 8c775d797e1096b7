"""DogStatsD lines, formatted by the datadog package but handed back to gespann rather than sent.

`DogStatsd` swallows socket errors (it logs them and drops the packet), so it
cannot tell gespann what did not reach the agent. gespann therefore lets it
format each line (name, namespace, tag normalisation, constant and DD_* tags,
origin detection) into a stand-in socket, and sends the lines itself
(agent.py), where every failure is seen and counted.

The datadog package is imported when the first LineFormatter is made, that is
when a DataDog exporter is built: registering its kind costs nothing.
"""

from __future__ import annotations

import socket
from typing import Callable, Iterable, Optional, Union

Number = Union[int, float]


class LineFormatter:
    def __init__(self, prefix: str, tags: Iterable[str]):
        from datadog.dogstatsd import DogStatsd

        self._caught = _CatchingSocket()
        self._statsd = DogStatsd(namespace=prefix or None, constant_tags=list(tags), disable_telemetry=True)

    def gauge(self, name: str, value: Number, tags: Iterable[str]) -> Optional[str]:
        return self._format(self._statsd.gauge, name, value, tags)

    def count(self, name: str, value: Number, tags: Iterable[str]) -> Optional[str]:
        return self._format(self._statsd.increment, name, value, tags)

    def _format(self, submit: Callable, name: str, value: Number, tags: Iterable[str]) -> Optional[str]:
        """The line for one value; None when DogStatsD is disabled (DD_DOGSTATSD_DISABLE)."""
        if self._statsd.socket is not self._caught:  # DogStatsd drops its socket around a fork
            self._statsd.socket = self._caught
        submit(name, value, tags=list(tags))
        return self._caught.take()


class _CatchingSocket:
    """Enough of a connected UDP socket for DogStatsd: what it sends is kept, not sent."""

    family = socket.AF_INET

    def __init__(self):
        self._lines: list[str] = []

    def getsockopt(self, level: int, option: int) -> int:
        return socket.SOCK_DGRAM

    def settimeout(self, timeout: Optional[float]) -> None:
        pass

    def send(self, payload: bytes) -> int:
        self._lines.append(payload.decode("utf-8").rstrip("\n"))
        return len(payload)

    def close(self) -> None:
        pass

    def take(self) -> Optional[str]:
        lines, self._lines = self._lines, []
        return "\n".join(lines) if lines else None
