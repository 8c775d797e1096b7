"""The kernel walk of open TCP connections: taken where the kernel runs it, and exact without any hold.

Byte counters of open connections come from the walk (probes/tcp_walk.py) where
the kernel has iter/tcp, socket storage in tracing programs and
compare-and-swap; from sock_diag elsewhere. Either way a counter must never go
down between two collections, and once every connection has ended it must
equal both the sum of the connections' records and what the application
itself wrote, while collections run all along, racing the ends. (Through
sock_diag, a received byte per connection may be too many: see
probes/tcp_metrics.py.)
"""
import random
import socket
import struct
import threading
import time

import pytest
from loopback import wait_for

from gespann.bpf.channel import RecordChannel
from gespann.bpf.errors import FeatureUnsupportedError
from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp import walk as tcp_walk

pytestmark = pytest.mark.root
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES)
_LINGER_ZERO = struct.pack("ii", 1, 0)


def require_walk() -> None:
    why = tcp_walk.unavailable_reason()
    if why is not None:
        pytest.skip(f"n/a: {why}")


def test_the_walk_is_taken_where_the_kernel_runs_it_and_sock_diag_where_asked(namespace):
    require_walk()
    with ProbeSet.attach(PROBES, AttachSettings(netns=namespace.inode)) as probes:
        assert probes["tcp_lifecycle"].flavour.mode in tcp_walk.STORAGE_FLAVOURS
        assert probes.walks["tcp_lifecycle"] is not None
        assert tcp_walk.COUNTED_MAP in probes["tcp_lifecycle"].maps
    with ProbeSet.attach(PROBES, AttachSettings(netns=namespace.inode, open_connections="user_space")) as probes:
        assert probes.walks["tcp_lifecycle"] is None and tcp_walk.COUNTED_MAP not in probes["tcp_lifecycle"].maps
    forced = AttachSettings(mode="raw_tracepoint", netns=namespace.inode)
    with ProbeSet.attach(PROBES, forced) as probes:  # its sockets are not BTF pointers: no storage
        assert probes.walks["tcp_lifecycle"] is None
    insisted = AttachSettings(mode="raw_tracepoint", netns=namespace.inode, open_connections="kernel_walk")
    with pytest.raises(FeatureUnsupportedError,
                       match="socket storage needs the fentry or tp_btf flavour of every probe that shares"):
        ProbeSet.attach(PROBES, insisted)


class Churn:
    """Connections opened, fed both ways, and ended (closed, or reset once the peer has read everything)
    at random, in the calling thread's namespace; `written` is every payload byte the application wrote."""

    def __init__(self, seed: int, concurrent: int):
        self.random, self.concurrent = random.Random(seed), concurrent
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.written = 0
        self.ended = 0  # records to expect: one per side of each connection, one per failed open

    def step(self) -> None:
        for _ in range(2 * self.concurrent):  # bounded: a refused attempt is retried, a few times at most
            if len(self.pairs) >= self.concurrent:
                break
            try:
                client = socket.create_connection(self.listener.getsockname())
            except (ConnectionResetError, ConnectionRefusedError):
                # Churn this fast can pick a port whose last connection is still in TIME_WAIT on the
                # listener's side, and the kernel resets the attempt: a failed open, one record (the client's).
                self.ended += 1
                continue
            server, _ = self.listener.accept()
            self.pairs.append((client, server))
        for client, server in self.random.sample(self.pairs, k=min(20, len(self.pairs))):
            for sender, receiver in ((client, server), (server, client)):
                size = self.random.choice((0, 1, 100, 1460, 5000, 70000))
                if size:
                    sender.sendall(b"p" * size)
                    _receive(receiver, size)
                    self.written += size
        for _ in range(self.random.randint(0, 8)):
            self.end(self.pairs.pop(self.random.randrange(len(self.pairs))), reset=self.random.random() < 0.3)

    def end(self, pair: tuple[socket.socket, socket.socket], reset: bool) -> None:
        closing, other = pair if self.random.random() < 0.5 else pair[::-1]
        if reset:
            closing.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        closing.close()
        try:
            assert other.recv(1) == b""
        except ConnectionResetError:
            pass
        other.close()
        self.ended += 2  # an end on each side

    def close(self) -> None:
        while self.pairs:
            self.end(self.pairs.pop(), reset=False)
        self.listener.close()


def _receive(sock: socket.socket, size: int) -> None:
    while size:
        size -= len(sock.recv(min(size, 1 << 16)))


@pytest.mark.parametrize("open_connections", ["kernel_walk", "user_space"])
def test_counters_never_go_down_and_end_equal_to_the_records_and_the_application(namespace, open_connections):
    if open_connections == "kernel_walk":
        require_walk()
    channel = RecordChannel.for_reader("auto", "gsp_records")
    settings = AttachSettings(netns=namespace.inode, open_connections=open_connections)
    with channel, ProbeSet.attach(PROBES, settings, records=channel) as probes, \
            KernelCollector(probes, namespace.path, records=channel) as collector:
        assert (probes.walks["tcp_lifecycle"] is not None) == (open_connections == "kernel_walk")
        seen, stop, failures = [], threading.Event(), []

        def collect():  # collections all along, racing the ends
            previous = (0, 0)
            while not stop.is_set():
                series = collector.snapshot()["bytes_total"].series
                now = tuple(sum(n for key, n in series.items() if ("direction", d) in key)
                            for d in ("sent", "received"))
                if now[0] < previous[0] or now[1] < previous[1]:
                    failures.append((previous, now))
                previous = now
                seen.append(now)

        collecting = threading.Thread(target=collect)
        collecting.start()
        records = []
        with namespace.enter():
            churn = Churn(seed=13, concurrent=150)
            try:
                deadline = time.monotonic() + 6
                for _ in range(400):
                    if time.monotonic() > deadline:
                        break
                    churn.step()
                    records.extend(collector.events(timeout=0))
            finally:
                churn.close()
                stop.set()
                collecting.join(timeout=30)
        assert len(seen) > 20, "collections should have raced the churn"
        assert not failures, f"a counter went down between two collections: {failures[:3]}"

        def all_ended():
            records.extend(collector.events(timeout=0))
            return len(records) == churn.ended
        wait_for(all_ended, timeout=10)
        assert len(records) == churn.ended
        snapshot = collector.snapshot()
        sent = snapshot["bytes_total"].value(protocol="tcp", direction="sent")
        received = snapshot["bytes_total"].value(protocol="tcp", direction="received")
        assert sum(r.bytes_sent for r in records) == churn.written
        assert sum(r.bytes_received for r in records) == churn.written
        if open_connections == "kernel_walk":
            assert (sent, received) == (churn.written, churn.written)
        else:
            # sock_diag reads a socket's state before its counters: a dump that races the peer's FIN may
            # count that FIN as a received byte, and the total is held at its highest (probes/tcp_metrics.py).
            assert sent == churn.written and churn.written <= received <= churn.written + churn.ended
        assert snapshot["connections_open"].value(protocol="tcp") == 0


def _disconnect(sock: socket.socket) -> None:
    """connect() to AF_UNSPEC: tcp_disconnect(), which aborts the connection and zeroes the socket's
    counters, leaving the socket free to connect again."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    unspec = struct.pack("H14x", socket.AF_UNSPEC)
    assert libc.connect(sock.fileno(), ctypes.c_char_p(unspec), len(unspec)) == 0, ctypes.get_errno()


def test_a_socket_that_connects_again_counts_each_connection_once(namespace):
    require_walk()
    with ProbeSet.attach(PROBES, AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        assert probes.walks["tcp_lifecycle"] is not None
        with namespace.enter():
            first, second = (socket.create_server(("127.0.0.1", 0)) for _ in range(2))
            client = socket.create_connection(first.getsockname())
            server, _ = first.accept()
            client.sendall(b"a" * 100)
            _receive(server, 100)
            collector.snapshot()  # the walk counts the first connection's 100 bytes, and keeps its storage
            _disconnect(client)
            try:
                server.recv(1)
            except ConnectionResetError:
                pass
            server.close()
            client.connect(second.getsockname())  # the same socket, its storage from the first connection
            again, _ = second.accept()
            client.sendall(b"b" * 7)
            _receive(again, 7)
            snapshot = collector.snapshot()
            assert snapshot["bytes_total"].value(protocol="tcp", direction="sent") == 107
            assert snapshot["bytes_total"].value(protocol="tcp", direction="received") == 107
            client.close()
            assert again.recv(1) == b""
            again.close()
            first.close()
            second.close()
        wait_for(lambda: collector.snapshot()["connections_open"].value(protocol="tcp") == 0)
        snapshot = collector.snapshot()
        assert snapshot["bytes_total"].value(protocol="tcp", direction="sent") == 107
        assert snapshot["bytes_total"].value(protocol="tcp", direction="received") == 107


def test_a_connection_idle_across_walks_shows_its_next_bytes_at_once(namespace):
    """The walk passes over connections that moved nothing since the last walk began: the first payload
    after any idle spell must still show in the next collection, either way."""
    require_walk()
    with ProbeSet.attach(PROBES, AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            listener = socket.create_server(("127.0.0.1", 0))
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            total = 0
            for sender, receiver, size in ((client, server, 10), (server, client, 200), (client, server, 3000)):
                for _ in range(3):  # walks that find it idle
                    collector.snapshot()
                    time.sleep(0.03)
                sender.sendall(b"i" * size)
                _receive(receiver, size)
                total += size
                snapshot = collector.snapshot()
                assert snapshot["bytes_total"].value(protocol="tcp", direction="sent") == total
                assert snapshot["bytes_total"].value(protocol="tcp", direction="received") == total
            for sock in (client, server, listener):
                sock.close()
