"""TCP traffic whose every outcome is known in advance: exchanges, resets, refused and timed-out connects.

Every call returns once the kernel is done with the connection on both sides,
so the test can compare counts at once. Runs in whatever network namespace the
calling thread is in.
"""
import select
import socket
import struct
import subprocess
import time

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
TCP_CLOSE = 7  # tcp_info.tcpi_state of a socket whose connection has ended or failed
#: A port nothing listens on, for refused connects; SYNs to DROPPED_PORT are dropped by `drop_syns_to`.
CLOSED_PORT, DROPPED_PORT = 1, 9
_LINGER_ZERO = struct.pack("ii", 1, 0)


class TcpTraffic:
    """A listener on the family's loopback address and connections to it."""

    def __init__(self, family: int = socket.AF_INET):
        self.family, self.address = family, LOOPBACK[family]
        self.listener = socket.socket(family)
        self.listener.bind((self.address, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]

    def connect(self) -> tuple[socket.socket, socket.socket]:
        """(client, server) of a new connection."""
        client = socket.create_connection((self.address, self.port))
        server, _ = self.listener.accept()
        return client, server

    def exchange(self, sent: int, replied: int) -> None:
        """The client sends `sent` bytes, the server replies `replied`, the client closes first."""
        client, server = self.connect()
        client.sendall(b"a" * sent)
        _receive(server, sent)
        server.sendall(b"b" * replied)
        _receive(client, replied)
        close_orderly(client, server)

    def reset(self, by_client: bool) -> None:
        """A connection ended by an RST from one side: close() with SO_LINGER 0."""
        client, server = self.connect()
        closing, other = (client, server) if by_client else (server, client)
        closing.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        closing.close()
        try:
            assert other.recv(1) == b""
        except ConnectionResetError:
            pass
        other.close()

    def close(self) -> None:
        self.listener.close()


def close_orderly(client: socket.socket, server: socket.socket) -> None:
    """The client closes first, the server reads its FIN and closes: an orderly end on both sides, never a
    simultaneous close."""
    client.close()
    assert server.recv(1) == b""
    server.close()


def _receive(sock: socket.socket, n: int) -> None:
    while n:
        n -= len(sock.recv(n))


def refused(family: int) -> None:
    try:
        socket.create_connection((LOOPBACK[family], CLOSED_PORT)).close()
    except ConnectionRefusedError:
        return
    raise AssertionError("a connect to a closed port was not refused")


def syn_timeouts(families: list[int], limit: float = 10.0) -> None:
    """A connect to DROPPED_PORT per family, all at once, waiting until each has failed with ETIMEDOUT."""
    pending = []
    for family in families:
        s = socket.socket(family)
        s.setblocking(False)
        s.connect_ex((LOOPBACK[family], DROPPED_PORT))
        pending.append(s)
    deadline = time.monotonic() + limit
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], pending, [], 0.2)
        for s in writable:
            # Writable once the kernel has set sk_err, a moment before the state change that the
            # probes read sk_err at; reading SO_ERROR (which clears it) in between would hide the
            # reason from them. So wait for CLOSE: tcp_info, unlike SO_ERROR, clears nothing.
            if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
                continue
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 110  # ETIMEDOUT
            s.close()
            pending.remove(s)
    assert not pending, "SYNs were not dropped: the connects did not time out"


def drop_syns_to(port: int) -> None:
    """An nftables rule in the current namespace dropping SYNs to `port`, both families."""
    rules = (f"add table inet gespann_test\n"
             f"add chain inet gespann_test out {{ type filter hook output priority 0; }}\n"
             f"add rule inet gespann_test out tcp dport {port} tcp flags syn drop\n")
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)


def set_syn_retries(n: int) -> None:
    """net.ipv4.tcp_syn_retries of the current namespace (it covers IPv6 too)."""
    with open("/proc/sys/net/ipv4/tcp_syn_retries", "w") as f:
        f.write(str(n))
