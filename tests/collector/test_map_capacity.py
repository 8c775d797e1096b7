"""Past a kernel map's capacity the totals stay exact, and what the map could not keep is counted.

The capacities are config keys (limits.tcp_connections, limits.udp_flows), so
the tests force them tiny and go past them with little traffic; one UDP test
also goes past the default flow map (60,000 flows within one collection). The
oracle is the kernel's own counters in the test's namespace.
"""
import logging
import socket

import mib
import pytest
from loopback import wait_for
from tcp_traffic import TcpTraffic, close_orderly

from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp import walk as tcp_walk
from gespann.probes.toolkit.reading import ReadContext
from gespann.probes.udp import UDP_PROBES
from gespann.probes.udp.flows import CAPACITY as UDP_FLOWS_DEFAULT
from gespann.probes.udp.metrics import UdpMetrics

pytestmark = pytest.mark.root
PAYLOAD = 20
FIRST_PORT = 20000


def counts(series, name: str) -> dict:
    """A metric's series (from UdpMetrics' series or a Snapshot), labels as plain tuples of values."""
    metric = series[name]
    return {tuple(value for _, value in key): n for key, n in getattr(metric, "series", metric).items()}


def udp_mib() -> dict:
    """Datagrams the namespace's UDP layer sent, and those its devices handed it (taken or not)."""
    udp = mib.counters()["Udp"]
    return {"sent": udp["OutDatagrams"], "received": udp["InDatagrams"] + udp["NoPorts"] + udp["InErrors"]}


@pytest.mark.parametrize("datagrams, capacity", [
    pytest.param(600, 64, id="600-datagrams-64-flow-map"),
    pytest.param(30000, None, id=f"30000-datagrams-default-{UDP_FLOWS_DEFAULT}-flow-map", marks=pytest.mark.scale),
])
def test_udp_totals_are_exact_past_the_flow_map_and_evictions_are_counted(namespace, datagrams, capacity, caplog):
    """One socket sends a datagram to each of `datagrams` ports inside one collection: twice as many flows
    (each datagram is a client flow sent and a server flow received, on loopback)."""
    capacities = {} if capacity is None else {"udp_flows": capacity}
    with ProbeSet.attach(UDP_PROBES, AttachSettings(netns=namespace.inode, capacities=capacities)) as probes:
        flow_map = probes["udp_send"].maps["udp_flows"]
        assert flow_map.max_entries == (capacity or UDP_FLOWS_DEFAULT)
        metrics = UdpMetrics.from_context(ReadContext(probes["udp_send"], probes.walks.get("udp_send"),
                                                      idle_timeout=60, udp_flow_timeout=120))
        with namespace.enter():
            before = udp_mib()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.bind(("127.0.0.1", 0))
                own = sender.getsockname()[1]
                ports = [p for p in range(FIRST_PORT, FIRST_PORT + datagrams + 1) if p != own][:datagrams]
                for port in ports:
                    sender.sendto(b"u" * PAYLOAD, ("127.0.0.1", port))
            wait_for(lambda: udp_mib()["received"] - before["received"] == datagrams)
            kernel = {d: n - before[d] for d, n in udp_mib().items()}
        assert kernel == {"sent": datagrams, "received": datagrams}

        with caplog.at_level(logging.WARNING, logger="gespann.probes.udp.metrics"):
            wait_for(lambda: counts(metrics.series(), "datagrams_total")
                     == {("sent",): datagrams, ("received",): datagrams})
            series = metrics.series()
        assert counts(series, "datagrams_total") == {("sent",): kernel["sent"], ("received",): kernel["received"]}
        assert counts(series, "bytes_total") == {("sent", "udp"): PAYLOAD * datagrams,
                                                 ("received", "udp"): PAYLOAD * datagrams}
        opened = counts(series, "connections_opened_total")
        assert opened == {("udp", "client"): datagrams, ("udp", "server"): datagrams}
        (open_now,) = counts(series, "connections_open").values()
        assert open_now <= flow_map.max_entries
        closed = counts(series, "connections_closed_total")
        assert closed[("udp", "client")] + closed[("udp", "server")] + open_now == 2 * datagrams
        assert counts(series, "flows_evicted_total") == {("udp",): 2 * datagrams - open_now}  # none went idle
        warnings = [r.getMessage() for r in caplog.records if "limits.udp_flows" in r.getMessage()]
        assert len(warnings) == 1 and f"({flow_map.max_entries} flows)" in warnings[0]


def exchange(pairs, size: int) -> None:
    for client, server in pairs:
        for sender, receiver in ((client, server), (server, client)):
            sender.sendall(b"x" * size)
            receiver.recv(size, socket.MSG_WAITALL)


@pytest.mark.parametrize("open_connections", ["user_space", "auto"])
def test_tcp_ends_past_the_connection_map_are_counted_as_untracked(namespace, caplog, open_connections):
    """40 connections open at once over an 8-entry map, then closed: every end is counted, as closed or,
    for those whose entry was evicted, as untracked, and the eviction is logged once. Where the kernel
    keeps connections in socket storage instead (with the kernel walk), nothing is evicted: every end is
    counted as closed, and every byte."""
    n, capacity, before, after = 40, 8, 1000, 333
    settings = AttachSettings(netns=namespace.inode, capacities={"tcp_connections": capacity},
                              open_connections=open_connections)
    with ProbeSet.attach((tcp_lifecycle.PROBE, *tcp_resets.PROBES), settings) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        in_storage = probes.walks["tcp_lifecycle"] is not None
        if open_connections == "auto" and not in_storage:
            pytest.skip(f"n/a: {tcp_walk.unavailable_reason()}")
        if not in_storage:
            assert probes["tcp_lifecycle"].maps["tcp_connections"].max_entries == capacity
        with namespace.enter():
            traffic = TcpTraffic()
            pairs = [traffic.connect() for _ in range(n)]
            exchange(pairs, before)
        collector.snapshot()  # a walk counts the first part of their bytes while they are open
        with namespace.enter():
            exchange(pairs, after)
            for client, server in pairs:
                close_orderly(client, server)
            traffic.close()
        with namespace.enter():
            tcp = mib.counters()["Tcp"]
        assert tcp["ActiveOpens"] - tcp["AttemptFails"] == n and tcp["PassiveOpens"] == n

        def ended(snapshot) -> int:
            return sum(snapshot[name].total() for name in ("connections_closed_total", "connections_reset_total",
                                                           "connection_ends_untracked_total"))

        with caplog.at_level(logging.WARNING, logger="gespann.probes.tcp.metrics"):
            wait_for(lambda: ended(collector.snapshot()) == 2 * n)
            snapshot = collector.snapshot()
        assert counts(snapshot, "connections_opened_total") == {("tcp", "client"): n, ("tcp", "server"): n}
        assert ended(snapshot) == 2 * n
        untracked = snapshot["connection_ends_untracked_total"].total()
        assert counts(snapshot, "connections_reset_total") == {("sent",): 0, ("received",): 0}
        warnings = [r.getMessage() for r in caplog.records if "limits.tcp_connections" in r.getMessage()]
        if in_storage:
            assert untracked == 0 and not warnings
            assert counts(snapshot, "connections_closed_total") == {("tcp", "client"): n, ("tcp", "server"): n}
            written = 2 * n * (before + after)  # both sides of each connection, each way
            assert counts(snapshot, "bytes_total") == {("sent", "tcp"): written, ("received", "tcp"): written}
        else:
            assert untracked >= 2 * n - capacity
            assert len(warnings) == 1 and f"({capacity} entries)" in warnings[0]
