"""A loopback TCP workload whose every state transition is known in advance."""
import socket
import time

# enum tcp_state in include/net/tcp_states.h
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2 = 1, 2, 3, 4, 5
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN = 7, 8, 9, 10
LOOPBACK = bytes([127, 0, 0, 1])
ANY = bytes(4)


class Loopback:
    """A listener on 127.0.0.1 whose port is known before it listens, so a probe can filter on it.

    `run(n)` listens, makes n connections one after another (connect, accept,
    the client closes, the server reads EOF and closes) and returns when every
    transition has happened; `close()` closes the listener.
    """

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self, n: int) -> list[int]:
        self.listener.listen(n)  # again: harmless
        client_ports = []
        for _ in range(n):
            client = socket.create_connection(("127.0.0.1", self.port))
            server, _ = self.listener.accept()
            client_ports.append(client.getsockname()[1])
            client.close()
            assert server.recv(1) == b""  # the client's FIN has arrived: no simultaneous close
            server.close()
        wait_for(self._settled)
        return client_ports

    def _settled(self) -> bool:
        """Every connection's last transition is done: what is left on the port in /proc/net/tcp
        is the listener and the clients' TIME_WAIT sockets (the server sockets are gone)."""
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        port = f":{self.port:04X}"
        return all(row[3] in ("06", "0A") for row in rows if row[1].endswith(port) or row[2].endswith(port))

    def expected_counts(self, n: int) -> dict[int, int]:
        """Transitions by new state: each connection is seen from both ends, plus the listener."""
        return {LISTEN: 1, SYN_SENT: n, SYN_RECV: n, ESTABLISHED: 2 * n, FIN_WAIT1: n, FIN_WAIT2: n,
                CLOSE_WAIT: n, LAST_ACK: n, CLOSE: 2 * n + 1}

    def expected_records(self, client_ports: list[int], listener: tuple = ("listen", "close")) -> list[tuple]:
        """(oldstate, newstate, sport, dport, family, protocol, saddr, daddr) of every transition, sorted.

        A connecting socket enters SYN_SENT before its port is chosen (sport 0).
        The listener's transitions (those named in `listener`) have no peer:
        dport 0, daddr 0.0.0.0.
        """
        p = self.port
        records = [{"listen": (CLOSE, LISTEN, p, 0, ANY), "close": (LISTEN, CLOSE, p, 0, ANY)}[t] for t in listener]
        for c in client_ports:
            records += [(CLOSE, SYN_SENT, 0, p), (SYN_SENT, ESTABLISHED, c, p), (LISTEN, SYN_RECV, p, c),
                        (SYN_RECV, ESTABLISHED, p, c), (ESTABLISHED, FIN_WAIT1, c, p),
                        (ESTABLISHED, CLOSE_WAIT, p, c), (CLOSE_WAIT, LAST_ACK, p, c),
                        (FIN_WAIT1, FIN_WAIT2, c, p), (FIN_WAIT2, CLOSE, c, p), (LAST_ACK, CLOSE, p, c)]
        return sorted((old, new, sport, dport, socket.AF_INET, socket.IPPROTO_TCP, LOOPBACK, rest[0] if rest
                       else LOOPBACK) for old, new, sport, dport, *rest in records)

    def close(self):
        self.listener.close()


def wait_for(condition, timeout: float = 2.0) -> None:
    """Wait until `condition()` holds: a closed socket's last transitions come in softirq context."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
