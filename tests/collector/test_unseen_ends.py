"""An end tcp_lifecycle never saw is counted when the kernel frees the socket, and an end whose open it never
saw counts as untracked: the loss is said, never silent.

The kernel skips a program's run only when an interrupt nests the same event inside it, which no test can
time. So each test leaves what such a skip leaves, written with the map's own update on a real socket's
entry, and lets the kernel go on: the socket's CLOSE has already passed (a reset received leaves it open in
the application's hands) when the entry is put back, as if that CLOSE had gone unseen; then close() frees
the socket without another state change, and tcp:tcp_destroy_sock finds the entry.
"""
import ctypes
import errno
import os
import socket
import struct
import subprocess

import pytest
from loopback import wait_for
from namespaces import Namespace
from tcp_traffic import TcpTraffic, close_orderly, drop_syns_to

from gespann.bpf.syscall import libc
from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import connections as tcp_connections
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp import unseen_ends as tcp_unseen_ends

pytestmark = pytest.mark.root
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_unseen_ends.PROBE)
LINGER_ZERO = struct.pack("ii", 1, 0)


def _watching(namespace: Namespace) -> ProbeSet:
    return ProbeSet.attach(PROBES, AttachSettings(netns=namespace.inode))


def _state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def _entries(probes: ProbeSet) -> dict:
    return dict(probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME].items())


def _total(collector: KernelCollector, name: str, **labels) -> int:
    family = collector.snapshot()[name]
    return sum(n for key, n in family.series.items() if labels.items() <= dict(key).items())


def _reset_by_peer(traffic: TcpTraffic, probes: ProbeSet, role: int) -> tuple[socket.socket, int, tuple]:
    """A connection whose `role` side is reset by its peer and left open in the test's hands, in CLOSE:
    that side's socket, its address (the connection map's key) and its entry as it was while open."""
    client, server = traffic.connect()
    wait_for(lambda: len(_entries(probes)) == 2)
    key, entry = next((key, entry) for key, entry in _entries(probes).items() if entry.role == role)
    kept, peer = (client, server) if role == tcp_connections.CLIENT else (server, client)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    peer.close()
    wait_for(lambda: _state(kept) == tcp_lifecycle.CLOSE)
    wait_for(lambda: not _entries(probes))  # both ends seen: the reset, and the abort that sent it
    return kept, key, entry


@pytest.mark.parametrize("role, established", [
    pytest.param(tcp_connections.CLIENT, True, id="client"),
    pytest.param(tcp_connections.SERVER, True, id="server"),
    pytest.param(tcp_connections.CLIENT, False, id="open-in-progress"),
])
def test_an_entry_left_when_the_socket_is_freed_is_an_unseen_end(namespace, role, established):
    with _watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        connections = probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME]
        with namespace.enter():
            traffic = TcpTraffic()
            kept, key, entry = _reset_by_peer(traffic, probes, role)
            ends = (_total(collector, "connections_closed_total") + _total(collector, "connections_reset_total"))
            assert ends == 2
            if not established:  # as an open whose ESTABLISHED and CLOSE both went unseen leaves it
                entry = entry._replace(established_ns=0)
            connections[key] = entry
            kept.close()
            traffic.close()
        wait_for(lambda: key not in _entries(probes))
        assert key not in _entries(probes)
        role_name = ("client", "server")[role]
        assert _total(collector, "connection_ends_unseen_total", role=role_name) == (1 if established else 0)
        assert _total(collector, "connection_ends_unseen_total") == (1 if established else 0)
        assert _total(collector, "connection_opens_unseen_total") == (0 if established else 1)
        # Counted once, as unseen: nothing of it went to the ends tcp_lifecycle counts.
        assert _total(collector, "connections_closed_total") + _total(collector, "connections_reset_total") == 2
        assert _total(collector, "connection_ends_untracked_total") == 0


def test_an_end_whose_open_went_unseen_counts_as_untracked_not_closed(namespace):
    """An active open's ESTABLISHED unseen leaves its SYN_SENT entry: its end is counted untracked (its
    open was never counted), the entry goes, and the socket's free finds nothing left."""
    with _watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        connections = probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME]
        with namespace.enter():
            traffic = TcpTraffic()
            client, server = traffic.connect()
            wait_for(lambda: len(_entries(probes)) == 2)
            key, entry = next((k, e) for k, e in _entries(probes).items() if e.role == tcp_connections.CLIENT)
            assert entry.syn_sent_ns and entry.established_ns
            connections[key] = entry._replace(established_ns=0)
            close_orderly(client, server)
            traffic.close()
        wait_for(lambda: _total(collector, "connections_closed_total") == 1
                 and _total(collector, "connection_ends_untracked_total") == 1)
        assert _total(collector, "connection_ends_untracked_total") == 1
        assert _total(collector, "connections_closed_total", role="server") == 1
        assert _total(collector, "connections_closed_total", role="client") == 0
        assert not _entries(probes)
        assert _total(collector, "connection_ends_unseen_total") == 0
        assert _total(collector, "connection_opens_unseen_total") == 0


# A socket freed with neither its CLOSE nor its free seen leaves its entry at an address the kernel soon gives
# to a new socket (the bench's soak meets it: docs/benchmarks.md, Soak). tcp_lifecycle finds it there when the
# new connection's entry goes in, and counts it as unseen by the stale entry's role before overwriting it.

def _disconnect(sock: socket.socket) -> None:
    """connect(AF_UNSPEC): the socket, in CLOSE already, may connect again (no state change)."""
    unspec = ctypes.create_string_buffer(16)  # sa_family 0
    assert libc.connect(sock.fileno(), unspec, len(unspec)) == 0, ctypes.get_errno()


def test_a_stale_entry_at_a_reconnecting_socket_is_an_unseen_end(namespace):
    """A client socket whose end went unseen connects again: its SYN_SENT finds the old entry."""
    with _watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        connections = probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME]
        with namespace.enter():
            traffic = TcpTraffic()
            kept, key, entry = _reset_by_peer(traffic, probes, tcp_connections.CLIENT)
            connections[key] = entry  # as if its CLOSE, and its free, went unseen
            _disconnect(kept)
            kept.connect((traffic.address, traffic.port))
            server, _ = traffic.listener.accept()
            wait_for(lambda: _total(collector, "connection_ends_unseen_total") == 1)
            assert _entries(probes)[key].established_ns > entry.established_ns  # the new connection's own
            close_orderly(kept, server)
            traffic.close()
        wait_for(lambda: _total(collector, "connections_closed_total") == 2)
        assert _total(collector, "connection_ends_unseen_total", role="client") == 1
        assert _total(collector, "connection_ends_unseen_total") == 1
        assert _total(collector, "connection_opens_unseen_total") == 0
        # The reset counted before, the new connection closed on both sides; nothing untracked.
        assert _total(collector, "connections_reset_total") == 2
        assert _total(collector, "connections_closed_total", role="client") == 1
        assert _total(collector, "connections_opened_total", role="client") == 2
        assert _total(collector, "connection_ends_untracked_total") == 0
        assert not _entries(probes)


def test_a_stale_entry_at_an_address_a_server_socket_takes_is_an_unseen_end(namespace):
    """A server socket freed, its entry put back at its address as an unseen end leaves it, and the next
    connection's server socket made on that CPU: the allocator hands out the address just freed, so the new
    entry lands on the stale one. Tried a few times, as another socket may take the address first."""
    with _watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        connections = probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME]
        cpu = min(os.sched_getaffinity(0))
        with namespace.enter(), _pinned(cpu):
            traffic = TcpTraffic()
            for attempt in range(20):
                kept, key, entry = _reset_by_peer(traffic, probes, tcp_connections.SERVER)
                client = socket.socket(traffic.family)  # made before the address is free
                kept.close()
                connections[key] = entry
                client.connect((traffic.address, traffic.port))
                server, _ = traffic.listener.accept()
                # Both of the new connection's entries in: accept() can return before the server's ESTABLISHED.
                wait_for(lambda: sum(e.established_ns > entry.established_ns for e in _entries(probes).values()) == 2)
                taken = key in _entries(probes) and _entries(probes)[key].established_ns > entry.established_ns
                if not taken:
                    connections.delete(key)
                close_orderly(client, server)
                wait_for(lambda: not _entries(probes))
                if taken:
                    break
            traffic.close()
        # The allocator hands the freed address to the next socket made on the CPU (every kernel of the matrix
        # does). A new entry that fails to go in over the stale one shows here: the stale one kept and taken
        # for the new connection's (so not taken, below), or its end untracked.
        assert taken, f"no new server socket's entry went in over the stale one in {attempt + 1} attempts"
        assert _total(collector, "connection_ends_untracked_total") == 0
        assert _total(collector, "connections_closed_total", role="server") == attempt + 1
        assert _total(collector, "connection_opens_unseen_total") == 0
        assert _total(collector, "connection_ends_unseen_total", role="server") == 1
        assert _total(collector, "connection_ends_unseen_total") == 1


def test_a_stale_entry_found_at_an_established_client_is_an_unseen_end(namespace):
    """An active open whose SYN_SENT went unseen, at an address an earlier socket's unseen end left its entry
    at: ESTABLISHED finds an entry with an ESTABLISHED of its own, counts it unseen, and opens anew."""
    with _watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        connections = probes["tcp_lifecycle"].maps[tcp_connections.MAP_NAME]
        with namespace.enter():
            traffic = TcpTraffic()
            drop_syns_to(traffic.port)  # the first SYN: the open waits in SYN_SENT for its retransmission
            client = socket.socket(traffic.family)
            client.setblocking(False)
            assert client.connect_ex((traffic.address, traffic.port)) == errno.EINPROGRESS
            wait_for(lambda: len(_entries(probes)) == 1)
            (key, entry), = _entries(probes).items()
            stale_ns = entry.syn_sent_ns - 1_000_000
            connections[key] = entry._replace(syn_sent_ns=stale_ns - 1000, established_ns=stale_ns)
            subprocess.run(["nft", "delete", "table", "inet", "gespann_test"], check=True)
            client.setblocking(True)
            client.settimeout(10)
            server, _ = traffic.listener.accept()  # the SYN retransmitted after a second
            wait_for(lambda: _total(collector, "connection_ends_unseen_total") == 1)
            close_orderly(client, server)
            traffic.close()
        wait_for(lambda: _total(collector, "connections_closed_total") == 2)
        assert _total(collector, "connection_ends_unseen_total", role="client") == 1
        assert _total(collector, "connections_opened_total", role="client") == 1
        assert _total(collector, "connections_closed_total", role="client") == 1
        assert _total(collector, "connection_ends_untracked_total") == 0
        assert not _entries(probes)


class _pinned:
    """The calling thread on one CPU, for the allocator's per-CPU reuse; its CPUs back on exit."""

    def __init__(self, cpu: int):
        self.cpu = cpu

    def __enter__(self):
        self.before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.before)
