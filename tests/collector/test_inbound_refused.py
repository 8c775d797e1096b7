"""Connection attempts refused by this host, by local port: exact against the namespace's own MIB counters.

Each test scans closed TCP ports (a SYN each, answered with a reset: Tcp OutRsts)
and sends UDP datagrams to closed ports (answered with ICMP port unreachable:
Udp NoPorts) inside a namespace of its own, so the kernel's counters there are
the oracle. Ports past the probe's capacity count under local_port="other".
"""
import socket
import time

import mib
import pytest
from kernel_features import require
from probe_flavours import FLAVOURS

from gespann.collector.collector import KernelCollector
from gespann.figures import labels
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.drops import inbound_refused

pytestmark = pytest.mark.root
#: Closed ports scanned, and how many SYNs or datagrams each gets.
TCP_PORTS, UDP_PORTS, TRIES = (20001, 20002, 20003, 20004, 20005), (30001, 30002, 30003), 3
SETTLE_SECONDS = 5.0


def scan(tcp_ports, udp_ports, tries, ipv6=False):
    """A SYN to each closed TCP port (refused at once: a reset), a datagram to each closed UDP port; with
    `ipv6`, each SYN once over IPv6 too (Tcp OutRsts counts both)."""
    for _ in range(tries):
        for port in tcp_ports:
            for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))[:2 if ipv6 else 1]:
                with socket.socket(family) as s:
                    assert s.connect_ex((address, port)) == 111  # ECONNREFUSED: the reset came
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for port in udp_ports:
                s.sendto(b"x", ("127.0.0.1", port))


def refused(collector) -> dict:
    return dict(collector.snapshot()["inbound_refused_total"].series)


def wait_for_total(collector, total: int) -> dict:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        series = refused(collector)
        if sum(series.values()) >= total or time.monotonic() > deadline:
            return series
        time.sleep(0.05)


def skip_without_drop_reasons():
    types = pytest.importorskip("gespann.btf").kernel_types()
    try:
        inbound_refused.no_socket_reason(type("Target", (), {"kernel_types": types})())
    except Exception as err:  # noqa: BLE001 - the reason is the skip's message
        pytest.skip(f"n/a: {err}")


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_refused_syns_and_datagrams_by_local_port_equal_the_kernels_counts(namespace, mode, perf_event_link, needed):
    require(*(feature() for feature in needed))
    skip_without_drop_reasons()
    if mode not in {flavour.mode for flavour in inbound_refused.PROBE.flavours}:
        pytest.skip(f"n/a: inbound_refused has no {mode} flavour (it reads kfree_skb's drop reason)")
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=namespace.inode)
    with ProbeSet.attach([inbound_refused.PROBE], settings) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        assert probes["inbound_refused"].flavour.mode == mode
        with namespace.enter():
            before = mib.counters()
            scan(TCP_PORTS, UDP_PORTS, TRIES, ipv6=True)
            after = mib.counters()
        resets = after["Tcp"]["OutRsts"] - before["Tcp"]["OutRsts"]
        no_ports = after["Udp"]["NoPorts"] - before["Udp"]["NoPorts"]
        series = wait_for_total(collector, resets + no_ports)
    assert resets == 2 * len(TCP_PORTS) * TRIES and no_ports == len(UDP_PORTS) * TRIES
    expected = {**{labels(protocol="tcp", local_port=str(port)): 2 * TRIES for port in TCP_PORTS},
                **{labels(protocol="udp", local_port=str(port)): TRIES for port in UDP_PORTS}}
    assert series == expected


def test_ports_past_the_capacity_count_under_other_and_the_sums_stay_exact(namespace):
    skip_without_drop_reasons()
    capacity = 4
    settings = AttachSettings(netns=namespace.inode, capacities={inbound_refused.COUNTS: capacity})
    with ProbeSet.attach([inbound_refused.PROBE], settings) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            before = mib.counters()
            scan(TCP_PORTS, UDP_PORTS, TRIES)
            after = mib.counters()
        series = wait_for_total(collector, (len(TCP_PORTS) + len(UDP_PORTS)) * TRIES)
    by_protocol = {protocol: sum(n for labels_, n in series.items() if dict(labels_)["protocol"] == protocol)
                   for protocol in ("tcp", "udp")}
    assert by_protocol == {"tcp": after["Tcp"]["OutRsts"] - before["Tcp"]["OutRsts"],
                           "udp": after["Udp"]["NoPorts"] - before["Udp"]["NoPorts"]}
    told_apart = [labels_ for labels_ in series if dict(labels_)["local_port"] != "other"]
    assert len(told_apart) == capacity
    assert any(dict(labels_)["local_port"] == "other" for labels_ in series)


def test_connections_to_open_ports_and_their_ends_are_not_counted(namespace):
    """Only first SYNs to closed ports: an accepted connection, its data and its end refuse nothing."""
    skip_without_drop_reasons()
    with ProbeSet.attach([inbound_refused.PROBE], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen()
                for _ in range(10):
                    with socket.create_connection(listener.getsockname()) as client:
                        server, _ = listener.accept()
                        client.sendall(b"hello")
                        assert server.recv(5) == b"hello"
                        server.close()
            scan(TCP_PORTS[:1], (), 1)
        series = wait_for_total(collector, 1)
    assert series == {labels(protocol="tcp", local_port=str(TCP_PORTS[0])): 1}
