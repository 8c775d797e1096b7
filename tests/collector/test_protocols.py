"""`scope.protocols`: a protocol left out has no probe in the kernel and no figure, and the other
is counted as exactly as ever.

UDP's probes run on every packet, TCP's included; a TCP-only host saves that
cost by leaving UDP out. Traffic of both protocols runs over loopback in a
namespace of the test's own, with gespann scoped to it.
"""
import dataclasses
import socket

import pytest
from loopback import wait_for
from namespaces import Namespace
from tcp_traffic import TcpTraffic

from gespann.collector.collector import KernelCollector
from gespann.config import Config
from gespann.probes import ProbeSet

pytestmark = pytest.mark.root

#: packet_drops and inbound_refused watch packets of every protocol: scope.protocols keeps them either way.
TCP_PROBES = {"tcp_lifecycle", "tcp_reset_sent", "tcp_reset_received", "tcp_icmp_errors", "tcp_unseen_ends",
              "packet_drops", "inbound_refused"}
UDP_PROBES = {"udp_send", "udp_receive", "packet_drops", "inbound_refused"}
REQUEST, REPLY = 40, 9  # bytes of the TCP exchange and of the UDP datagram and its answer


def traffic_of_both(namespace: Namespace) -> None:
    """One TCP connection (a request and a reply, then closed) and one UDP exchange."""
    with namespace.enter():
        tcp = TcpTraffic()
        tcp.exchange(REQUEST, REPLY)
        tcp.close()
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.sendto(b"q" * REQUEST, server.getsockname())
        data, peer = server.recvfrom(100)
        server.sendto(b"a" * REPLY, peer)
        assert len(client.recv(100)) == REPLY
        client.close(), server.close()


def watched(namespace: Namespace, protocols: tuple[str, ...]):
    config = dataclasses.replace(Config(), netns=namespace.path, protocols=protocols)
    return ProbeSet.attach_all(config)


def by_protocol(snapshot, name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in snapshot[name].series.items():
        protocol = dict(key).get("protocol")
        if value and protocol:
            found[protocol] = found.get(protocol, 0) + value
    return found


def assert_attached(probes, expected: set) -> None:
    """Every probe of `expected` is attached but those gespann runs without, where the kernel lacks them
    (inbound_refused before 5.17), and nothing else."""
    from gespann.probes import ALL_PROBES

    required = {probe.name for probe in ALL_PROBES if probe.required}
    assert expected & required <= set(probes.probes) <= expected


def test_tcp_alone_has_no_udp_probe_and_no_udp_figure(namespace):
    with watched(namespace, ("tcp",)) as probes, KernelCollector(probes, namespace.path) as collector:
        assert_attached(probes, TCP_PROBES)
        traffic_of_both(namespace)
        wait_for(lambda: by_protocol(collector.snapshot(), "connections_closed_total") == {"tcp": 2})
        snapshot = collector.snapshot()
        assert by_protocol(snapshot, "connections_opened_total") == {"tcp": 2}
        assert by_protocol(snapshot, "bytes_total") == {"tcp": 2 * (REQUEST + REPLY)}  # sent and received
        assert "datagrams_total" not in snapshot.metrics  # only the attached probes' metrics are exported


def test_udp_alone_has_no_tcp_probe_and_no_tcp_figure(namespace):
    with watched(namespace, ("udp",)) as probes, KernelCollector(probes, namespace.path) as collector:
        assert_attached(probes, UDP_PROBES)
        traffic_of_both(namespace)
        snapshot = collector.snapshot()
        # Over loopback both ends are in the namespace: a client flow and a server flow, each one
        # datagram and its bytes each way.
        assert by_protocol(snapshot, "connections_opened_total") == {"udp": 2}
        assert by_protocol(snapshot, "bytes_total") == {"udp": 2 * (REQUEST + REPLY)}
        assert snapshot["datagrams_total"].total() == 4
        assert by_protocol(snapshot, "connections_closed_total") == {}
