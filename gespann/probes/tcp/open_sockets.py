"""The TCP connections open right now, with their byte counts, from sock_diag (INET_DIAG with tcp_info).

The kernel probes count a connection's bytes when it ends; a connection that
lasts for hours must show its bytes sooner, so each collection asks the
kernel for every open connection's `tcpi_bytes_acked` and
`tcpi_bytes_received`. The netlink socket (sock_diag.py) is made once, inside
the watched network namespace (a socket stays in the namespace it was made
in), so every dump sees that namespace's connections and no other, whichever
thread asks.

Only full sockets are reported: a TIME_WAIT socket can show up under its
FIN_WAIT2 sub-state but carries no tcp_info, and its connection has ended.
"""

from __future__ import annotations

import socket
from typing import NamedTuple, Optional

from ..toolkit.socket_state import (
    CLOSE_WAIT,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT1,
    FIN_WAIT2,
    LAST_ACK,
    LISTEN,
    PEER_FIN_IN,
)
from .sock_diag import DiagSocket

#: The states of a full socket whose connection is open; sock_diag's state filter is a bit mask of them.
OPEN_STATES = (ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)
#: The state after our FIN was acked: it is in bytes_acked.
OUR_FIN_ACKED = (FIN_WAIT2,)


class OpenConnection(NamedTuple):
    """One open connection, as a dump shows it (a named tuple, for the same reason as TcpSocket)."""

    cookie: int  # the socket's cookie: stable for its life, never reused
    family: int
    state: int
    local_port: int
    remote_port: int
    bytes_acked: int  # as tcp_info has them: sequence space, FINs and a client's SYN included
    bytes_received: int
    #: Seconds since payload last went either way (tcp_info's last_data_sent / last_data_recv).
    idle_seconds: float = 0.0
    #: Payload transmitted at least once (4.19+): what "sent" means (tcp_lifecycle's docstring).
    bytes_transmitted: Optional[int] = None

    @property
    def needs_role(self) -> bool:
        """Whether payload() depends on the role: only where the kernel lacks bytes_sent (before 4.19)."""
        return self.bytes_transmitted is None

    def payload(self, is_client: bool = False) -> tuple[int, int]:
        """(sent, received) payload bytes: without the peer's FIN, and before 4.19, without the SYN and our FIN
        that bytes_acked counts."""
        if self.bytes_transmitted is not None:
            sent = self.bytes_transmitted
        else:
            sent = max(self.bytes_acked - is_client - (self.state in OUR_FIN_ACKED), 0)
        return sent, max(self.bytes_received - (self.state in PEER_FIN_IN), 0)


class OpenSockets:
    """sock_diag dumps of one network namespace (`netns_path`, or gespann's own)."""

    def __init__(self, netns_path: Optional[str] = None):
        self._diag = DiagSocket(netns_path)  # PermissionError without CAP_SYS_ADMIN for another namespace

    def connections(self) -> list[OpenConnection]:
        states = sum(1 << state for state in OPEN_STATES)
        return [OpenConnection(s.cookie, s.family, s.state, s.local_port, s.remote_port, s.bytes_acked,
                               s.bytes_received, min(s.last_data_sent_ms, s.last_data_recv_ms) / 1000,
                               s.bytes_transmitted)
                for family in (socket.AF_INET, socket.AF_INET6)
                for s in self._diag.tcp_sockets(family, states)]

    def listening_ports(self) -> set[int]:
        """Local ports that something listens on: a connection on one is a server's."""
        return {s.local_port for family in (socket.AF_INET, socket.AF_INET6)
                for s in self._diag.tcp_sockets(family, 1 << LISTEN)}

    def close(self) -> None:
        self._diag.close()
