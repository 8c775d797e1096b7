"""Datagrams to the DataDog agent over UDP, with every failure that can be seen from the sending side counted.

DogStatsD is fire-and-forget. An agent that is down or unreachable shows up as:
- a name that does not resolve (getaddrinfo fails; retried on the next send);
- send() failing: no route, or ECONNREFUSED left pending on the connected socket
  by the ICMP port-unreachable answering an earlier datagram;
- that refusal already pending when send() returns (read with SO_ERROR): for an
  agent on this host the ICMP answer arrives before send() returns, so every
  datagram to a closed port is counted.
A refusal that arrives later fails the next send, which is counted instead; loss
in the network or inside the agent cannot be seen from here.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)

#: The DataDog agent when the config names none: DataDog's own variables, then its default.
DEFAULT_AGENT_HOST = "localhost"
DEFAULT_AGENT_PORT = 8125


def agent_address(configured: Optional[str]) -> tuple[str, int]:
    """`host:port` from the config, else DD_AGENT_HOST / DD_DOGSTATSD_PORT (as a DataDog sidecar is told)."""
    if configured is None:
        return (os.environ.get("DD_AGENT_HOST") or DEFAULT_AGENT_HOST,
                int(os.environ.get("DD_DOGSTATSD_PORT") or DEFAULT_AGENT_PORT))
    host, _, port = configured.rpartition(":")
    return host.strip("[]"), int(port)


class AgentSocket:
    """A UDP socket connected to the agent at host:port; `send` says whether the datagram left unrefused."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self._socket: Optional[socket.socket] = None
        self._problem: Optional[str] = None  # why the last send failed; None while sends succeed

    def send(self, payload: bytes) -> bool:
        try:
            connected = self._connected()
            connected.send(payload)
            pending = connected.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if pending:
                raise OSError(pending, os.strerror(pending))
        except OSError as err:
            self._failed(err)
            return False
        self._succeeded()
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connected(self) -> socket.socket:
        if self._socket is None:
            candidates = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)
            # IPv4 first, as DogStatsd does: "localhost" agents usually listen on 127.0.0.1 only.
            candidates.sort(key=lambda candidate: candidate[0] != socket.AF_INET)
            family, kind, protocol, _, address = candidates[0]
            sock = socket.socket(family, kind, protocol)
            try:
                sock.connect(address)
            except OSError:
                sock.close()
                raise
            self._socket = sock
        return self._socket

    def _failed(self, err: OSError) -> None:
        """Drop the socket, so the next send resolves the name again (the agent may have moved)."""
        self.close()
        problem = err.strerror or str(err)
        if problem != self._problem:
            log.warning("datadog: cannot send to the agent at %s:%s: %s; counting unsent metrics",
                        self.host, self.port, problem)
        self._problem = problem

    def _succeeded(self) -> None:
        if self._problem is not None:
            log.info("datadog: sending to the agent at %s:%s again", self.host, self.port)
        self._problem = None
