"""An end tcp_lifecycle never saw is counted when the kernel frees the socket, and an end whose open it never
saw counts as untracked: the loss is said, never silent.

The kernel skips a program's run only when an interrupt nests the same event inside it, which no test can
time. So each test leaves what such a skip leaves, written with the map's own update on a real socket's
entry, and lets the kernel go on: the socket's CLOSE has already passed (a reset received leaves it open in
the application's hands) when the entry is put back, as if that CLOSE had gone unseen; then close() frees
the socket without another state change, and tcp:tcp_destroy_sock finds the entry.
"""
import socket
import struct

import pytest
from loopback import wait_for
from namespaces import Namespace
from tcp_traffic import TcpTraffic

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
            client.close()
            assert server.recv(1) == b""
            server.close()
            traffic.close()
        wait_for(lambda: _total(collector, "connections_closed_total") == 1
                 and _total(collector, "connection_ends_untracked_total") == 1)
        assert _total(collector, "connection_ends_untracked_total") == 1
        assert _total(collector, "connections_closed_total", role="server") == 1
        assert _total(collector, "connections_closed_total", role="client") == 0
        assert not _entries(probes)
        assert _total(collector, "connection_ends_unseen_total") == 0
        assert _total(collector, "connection_opens_unseen_total") == 0
