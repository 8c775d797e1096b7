"""TCP lifecycle metrics, exact, in a namespace of the test's own, in every attach flavour.

gespann is scoped to a fresh network namespace and the traffic runs inside it,
so every figure in the snapshot is known in advance: opens per role, orderly
closes, resets per direction, failures per reason, payload bytes (while
connections are open, and after), and connections open before gespann started.
"""
import select
import socket
import struct

import mib
import pytest
from kernel_features import require
from loopback import wait_for
from namespaces import Namespace
from probe_flavours import FLAVOURS
from tcp_traffic import (
    DROPPED_PORT,
    TcpTraffic,
    drop_syns_to,
    refused,
    set_syn_retries,
    syn_timeouts,
)

from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp import unseen_ends as tcp_unseen_ends

pytestmark = pytest.mark.root
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_unseen_ends.PROBE)
FAMILIES = [pytest.param(socket.AF_INET, id="ipv4"), pytest.param(socket.AF_INET6, id="ipv6")]
#: (client sends, server replies) per orderly connection
EXCHANGES = [(1, 0), (0, 7), (1000, 3), (65536 + 17, 4096), (5, 250000)]
REFUSED, RESETS, TIMEOUTS = 3, 2, 4


def watching(namespace: Namespace, mode: str = "auto", perf_event_link: str = "auto"):
    """The probes scoped to `namespace`, each in `mode` where it has that flavour."""
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=namespace.inode)
    return ProbeSet.attach(PROBES, settings)


def counts(snapshot, name: str) -> dict[tuple, int]:
    """The metric's non-zero series, labels as plain tuples of values."""
    return {tuple(value for _, value in key): n for key, n in snapshot[name].series.items() if n}


def settled(collector: KernelCollector, ended: int):
    """A snapshot once `ended` connection ends (by close or reset) are counted and none is open."""
    def done():
        s = collector.snapshot()
        total = s["connections_closed_total"].total() + s["connections_reset_total"].total()
        return total == ended and s["connections_open"].total() == 0
    wait_for(done)
    return collector.snapshot()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_opens_ends_failures_and_bytes_are_exact(namespace, mode, perf_event_link, needed, family):
    require(*(feature() for feature in needed))
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        assert probes["tcp_lifecycle"].flavour.mode == mode
        with namespace.enter():
            traffic = TcpTraffic(family)
            for sent, replied in EXCHANGES:
                traffic.exchange(sent, replied)
            for by_client in (True, False):
                for _ in range(RESETS):
                    traffic.reset(by_client)
            for _ in range(REFUSED):
                refused(family)
            traffic.close()
        n, k = len(EXCHANGES), 2 * RESETS  # connections ended orderly, and by a reset
        snapshot = settled(collector, 2 * (n + k))
        with namespace.enter():  # the kernel's own counts in the namespace: what the network did
            kernel = mib.counters()["Tcp"]
        assert kernel["ActiveOpens"] - kernel["AttemptFails"] == n + k and kernel["PassiveOpens"] == n + k
        assert counts(snapshot, "connections_opened_total") == {("tcp", "client"): n + k, ("tcp", "server"): n + k}
        assert counts(snapshot, "connections_closed_total") == {("tcp", "client"): n, ("tcp", "server"): n}
        assert counts(snapshot, "connections_reset_total") == {("sent",): k, ("received",): k}
        assert counts(snapshot, "connections_failed_total") == {("refused",): REFUSED}
        # Every end seen at its CLOSE left nothing for the socket's free to find.
        assert not counts(snapshot, "connection_ends_unseen_total")
        assert not counts(snapshot, "connection_opens_unseen_total")
        assert not counts(snapshot, "connection_ends_untracked_total")
        payload = sum(sent + replied for sent, replied in EXCHANGES)
        assert counts(snapshot, "bytes_total") == {("sent", "tcp"): payload, ("received", "tcp"): payload}
        # A slow machine retransmits even on loopback (a tail loss probe): as many as the kernel counted.
        assert snapshot["retransmits_total"].total() == kernel["RetransSegs"]
        assert snapshot["rtt_seconds"].value().count == 2 * (n + k)
        assert snapshot["connection_duration_seconds"].value(protocol="tcp").count == 2 * (n + k)
        latency = snapshot["connect_latency_seconds"].value()
        assert latency.count == n + k and 0 < latency.sum < 1
        assert counts(snapshot, "probe_info")[(mode, "tcp_lifecycle")] == 1


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_a_close_in_fin_wait2_before_the_peers_fin_counts_exact_bytes(namespace, mode, perf_event_link, needed):
    """shutdown(SHUT_WR), the FIN acked, then close(): the kernel ends the socket from FIN_WAIT2
    before the peer's FIN, so none is in its bytes_received (on a loopback where the peer's ACK
    comes at once, a plain close() can end the same way)."""
    require(*(feature() for feature in needed))
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            traffic = TcpTraffic()
            client, server = traffic.connect()
            client.sendall(b"a" * 30)
            server.recv(30, socket.MSG_WAITALL)
            server.sendall(b"b" * 5)
            client.recv(5, socket.MSG_WAITALL)
            client.shutdown(socket.SHUT_WR)
            assert server.recv(1) == b""
            wait_for(lambda: client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                     == tcp_lifecycle.FIN_WAIT2)
            client.close()  # ends it from FIN_WAIT2 at once: a timewait socket waits for the FIN
            server.close()
            traffic.close()
        snapshot = settled(collector, 2)
        assert counts(snapshot, "connections_closed_total") == {("tcp", "client"): 1, ("tcp", "server"): 1}
        assert counts(snapshot, "bytes_total") == {("sent", "tcp"): 35, ("received", "tcp"): 35}


#: struct tcp_info: tcpi_unacked, segments sent and not yet acknowledged.
TCPI_UNACKED = 24
LINGER_ZERO = struct.pack("ii", 1, 0)
IN_FLIGHT_ATTEMPTS = 5


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_a_reset_with_data_in_flight_counts_it_sent_on_one_side_as_received_on_the_other(
        namespace, mode, perf_event_link, needed):
    """The server delays its ACKs, takes the client's data into its queue, and aborts before acknowledging
    it: the client's sent bytes are what the server received (payload transmitted, not payload acked)."""
    require(*(feature() for feature in needed))
    payload, in_flight = 1000, 0
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            traffic = TcpTraffic()
            for _ in range(IN_FLIGHT_ATTEMPTS):
                client, server = traffic.connect()
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)  # delayed ACKs from now
                client.sendall(b"f" * payload)
                select.select([server], [], [], 5)  # the data is in the server's queue, unread
                unacked = struct.unpack_from("=I", client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104),
                                             TCPI_UNACKED)[0]
                in_flight += unacked > 0
                server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                server.close()  # unread data: an RST, whatever SO_LINGER says
                with pytest.raises(ConnectionResetError):
                    client.recv(1)
                client.close()
                if in_flight:
                    break
            traffic.close()
        attempts = _ + 1
        snapshot = settled(collector, 2 * attempts)
        assert in_flight, "every ACK came before the reset: no attempt had data in flight"
        assert counts(snapshot, "connections_reset_total") == {("sent",): attempts, ("received",): attempts}
        assert counts(snapshot, "bytes_total") == {("sent", "tcp"): payload * attempts,
                                                   ("received", "tcp"): payload * attempts}


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_connects_whose_syns_are_dropped_fail_by_timeout(namespace, mode, perf_event_link, needed):
    require(*(feature() for feature in needed))
    with namespace.enter():
        set_syn_retries(1)  # SYN, one retry after 1 s, given up after 3 s
        drop_syns_to(DROPPED_PORT)
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            syn_timeouts([socket.AF_INET, socket.AF_INET6] * (TIMEOUTS // 2))
        snapshot = collector.snapshot()
        # Each failed by timeout, or said unseen: the timer that ends them may run on top of a task the kernel
        # runs no program for (kernel_skips.py); tcp_unseen_ends counts such an open when close() frees it.
        unseen = snapshot["connection_opens_unseen_total"].total()
        assert counts(snapshot, "connections_failed_total") == ({("timeout",): TIMEOUTS - unseen} if unseen < TIMEOUTS
                                                                 else {})
        assert counts(snapshot, "connections_opened_total") == {}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_bytes_of_an_open_connection_show_before_it_ends(namespace, mode, perf_event_link, needed, family):
    require(*(feature() for feature in needed))
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            traffic = TcpTraffic(family)
            client, server = traffic.connect()
            totals = [0, 0]
            for up, down in ((300, 20), (70000, 1)):
                client.sendall(b"u" * up)
                server.recv(up, socket.MSG_WAITALL)
                server.sendall(b"d" * down)
                client.recv(down, socket.MSG_WAITALL)
                totals[0] += up + down
                expected = {("sent", "tcp"): totals[0], ("received", "tcp"): totals[0]}
                wait_for(lambda expected=expected: counts(collector.snapshot(), "bytes_total") == expected)
                snapshot = collector.snapshot()
                assert counts(snapshot, "bytes_total") == expected
                assert counts(snapshot, "connections_open") == {("tcp",): 2}
                assert counts(snapshot, "connections_closed_total") == {}
            client.close()
            server.recv(1)
            server.close()
            traffic.close()
        snapshot = settled(collector, 2)
        assert counts(snapshot, "bytes_total") == expected  # now from the kernel's count at the end


def test_connections_open_before_start_count_from_the_first_snapshot(namespace, caplog):
    with namespace.enter():
        traffic = TcpTraffic()
        earlier = [traffic.connect() for _ in range(3)]
        for client, server in earlier:
            client.sendall(b"x" * 100)
            server.recv(100, socket.MSG_WAITALL)
    with watching(namespace) as probes, KernelCollector(probes, namespace.path) as collector:
        first = collector.snapshot()
        assert counts(first, "connections_open") == {("tcp",): 6}
        assert counts(first, "connections_opened_total") == {}
        assert counts(first, "bytes_total") == {}  # their bytes before gespann started are not gespann's
        client, server = earlier[0]
        client.sendall(b"y" * 11)
        server.recv(11, socket.MSG_WAITALL)
        wait_for(lambda: counts(collector.snapshot(), "bytes_total") == {("sent", "tcp"): 11, ("received", "tcp"): 11})
        for client, server in earlier:
            client.close()
            server.close()
        traffic.close()
        with caplog.at_level("WARNING", logger="gespann.probes.tcp.metrics"):
            wait_for(lambda: counts(collector.snapshot(), "connections_open") == {})
            last = collector.snapshot()
        assert counts(last, "connections_open") == {}
        assert counts(last, "bytes_total") == {("sent", "tcp"): 11, ("received", "tcp"): 11}
        # Adopted at start: each ends once, as any other (a server where something listens on its port).
        assert counts(last, "connections_closed_total") == {("tcp", "client"): 3, ("tcp", "server"): 3}
        assert counts(last, "connections_opened_total") == {}  # not opened since the start
        assert counts(last, "connection_ends_untracked_total") == {}
        assert not caplog.records
