"""Where the DataDog agent would be: a UDP socket on 127.0.0.1, and a parser for what arrives there."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Line:
    """One DogStatsD metric line: `name:value|type[|@rate][|#tag,...][|c:container]`."""

    name: str
    value: float
    type: str
    tags: tuple[str, ...]
    sample_rate: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "Line":
        head, *fields = text.split("|")
        name, _, value = head.rpartition(":")
        kind, rate, tags = fields[0], 1.0, ()
        for field in fields[1:]:
            if field.startswith("@"):
                rate = float(field[1:])
            elif field.startswith("#"):
                tags = tuple(field[1:].split(","))
        return cls(name, float(value), kind, tags, rate)


class FakeAgent:
    def __init__(self, port: int = 0):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.datagrams: list[bytes] = []

    def lines(self, quiet: float = 0.2, first: Optional[float] = 2.0) -> list[Line]:
        """Every line received until `quiet` seconds pass without a datagram (waiting up to `first` for one)."""
        received = []
        self._socket.settimeout(first)
        try:
            while True:
                datagram = self._socket.recv(65535)
                self.datagrams.append(datagram)
                received.extend(Line.parse(text) for text in datagram.decode().split("\n") if text)
                self._socket.settimeout(quiet)
        except socket.timeout:
            return received

    def close(self) -> None:
        self._socket.close()
