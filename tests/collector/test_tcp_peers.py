"""TCP figures by peer (labels.peers): counted in the kernel, capped with OTHER, grouped by named networks.

The traffic runs in a namespace of the test's own, so every figure is known:
the kernel's own counters there (/proc/net/snmp) and what the test's sockets
sent are the oracles. At every collection the sum over peers, OTHER included,
is the unlabelled total; once settled, that total is also the kernel's own
totals row (each event counted in both).
"""
import socket

import mib
import pytest
from kernel_features import require
from loopback import wait_for
from probe_flavours import FLAVOURS
from tcp_traffic import CLOSED_PORT, TcpTraffic, refused

from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import peers
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp.totals import Totals

pytestmark = pytest.mark.root
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES)
EXCHANGES = [(1, 0), (1000, 3), (65536 + 17, 4096)]
RESETS, REFUSED = 2, 3


def watching(namespace, mode="auto", perf_event_link="auto", networks=(), capacities=None):
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=namespace.inode, peers=True,
                              networks=networks, capacities=capacities or {})
    return ProbeSet.attach(PROBES, settings)


def series(snapshot, name: str) -> dict[tuple, int]:
    """The metric's non-zero series by label values (sorted label names, as Labels are)."""
    return {tuple(value for _, value in key): n for key, n in snapshot[name].series.items() if n}


def by(snapshot, name: str, **wanted) -> int:
    """The sum of a metric's series whose labels hold `wanted`."""
    return sum(n for key, n in snapshot[name].series.items()
               if all(dict(key).get(label) == value for label, value in wanted.items()))


def assert_sums_match(snapshot, walked: bool = True) -> None:
    """Each per-peer metric, summed over peers, is its unlabelled total (bytes: where the kernel walk counts
    open connections by peer; sock_diag's path counts ended ones only by peer)."""
    for role in ("client", "server"):
        assert by(snapshot, "peer_connections_opened_total", role=role) == \
            by(snapshot, "connections_opened_total", role=role)
        assert by(snapshot, "peer_connections_closed_total", role=role) == \
            by(snapshot, "connections_closed_total", role=role)
    for direction in ("sent", "received"):
        assert by(snapshot, "peer_connections_reset_total", direction=direction) == \
            by(snapshot, "connections_reset_total", direction=direction)
        if walked:
            assert by(snapshot, "peer_bytes_total", direction=direction) == \
                by(snapshot, "bytes_total", direction=direction)
    assert snapshot["peer_connections_failed_total"].total() == snapshot["connections_failed_total"].total()
    assert snapshot["peer_retransmits_total"].total() == snapshot["retransmits_total"].total()


def kernel_row_matches(collector, snapshot) -> bool:
    """The kernel's own totals row holds what the peer rows add up to (once nothing is in flight)."""
    reader = next(r for r in collector._readers if hasattr(r, "kernel_row"))
    row = reader.kernel_row()
    return (row[Totals.OPENED] == by(snapshot, "peer_connections_opened_total", role="client")
            and row[Totals.OPENED + 1] == by(snapshot, "peer_connections_opened_total", role="server")
            and row[Totals.BYTES_SENT] == by(snapshot, "peer_bytes_total", direction="sent")
            and row[Totals.BYTES_RECEIVED] == by(snapshot, "peer_bytes_total", direction="received"))


@pytest.mark.parametrize("family", [pytest.param(socket.AF_INET, id="ipv4"), pytest.param(socket.AF_INET6, id="ipv6")])
@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_per_peer_counts_are_exact_and_add_up(namespace, mode, perf_event_link, needed, family):
    require(*(feature() for feature in needed))
    with watching(namespace, mode, perf_event_link) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            traffic = TcpTraffic(family)
            open_client, open_server = traffic.connect()  # open across the collection: its bytes while open
            open_client.sendall(b"x" * 12345)
            open_server.recv(12345, socket.MSG_WAITALL)
            for sent, replied in EXCHANGES:
                traffic.exchange(sent, replied)
            for by_client in (True, False):
                for _ in range(RESETS):
                    traffic.reset(by_client)
            for _ in range(REFUSED):
                refused(family)
        n, k = len(EXCHANGES), 2 * RESETS

        def settled():
            s = collector.snapshot()
            return by(s, "peer_connections_closed_total") + by(s, "peer_connections_reset_total") == 2 * (n + k)
        wait_for(settled)
        snapshot = collector.snapshot()
        lifecycle = probes["tcp_lifecycle"]
        walked = tcp_lifecycle.uses_storage(lifecycle.target, lifecycle.flavour.btf_pointers)
        assert_sums_match(snapshot, walked)
        with namespace.enter():
            kernel = mib.counters()["Tcp"]
        port = str(traffic.port)
        client = dict(role="client", peer_address=traffic.address, peer_port=port)
        assert by(snapshot, "peer_connections_opened_total", **client) == kernel["ActiveOpens"] - \
            kernel["AttemptFails"] == n + k + 1
        assert by(snapshot, "peer_connections_opened_total", role="server", local_port=port) == \
            kernel["PassiveOpens"] == n + k + 1
        assert by(snapshot, "peer_connections_closed_total", **client) == n
        assert by(snapshot, "peer_connections_reset_total", **client, direction="sent") == RESETS
        assert by(snapshot, "peer_connections_reset_total", **client, direction="received") == RESETS
        assert by(snapshot, "peer_connections_failed_total", role="client", peer_address=traffic.address,
                  peer_port=str(CLOSED_PORT), reason="refused") == REFUSED == kernel["AttemptFails"]
        payload = sum(sent for sent, _ in EXCHANGES)
        replies = sum(replied for _, replied in EXCHANGES)
        still_open = 12345 if walked else 0  # the walk counts open connections by peer; sock_diag does not
        assert by(snapshot, "peer_bytes_total", **client, direction="sent") == payload + still_open
        assert by(snapshot, "peer_bytes_total", role="server", local_port=port, direction="received") == \
            payload + still_open
        assert by(snapshot, "peer_bytes_total", role="server", local_port=port, direction="sent") == replies
        assert by(snapshot, "peer_retransmits_total") == kernel["RetransSegs"]
        open_client.close()
        open_server.close()
        traffic.close()
        wait_for(lambda: kernel_row_matches(collector, collector.snapshot()))
        assert kernel_row_matches(collector, collector.snapshot())
        assert_sums_match(collector.snapshot())


def test_named_networks_group_addresses_and_the_cap_counts_the_rest_under_other(namespace, caplog):
    from namespaces import link  # noqa: F401 - addresses on lo suffice here

    with namespace.enter():
        import subprocess
        for n in range(1, 9):
            subprocess.run(["ip", "addr", "add", f"10.9.0.{n}/32", "dev", "lo"], check=True)
    networks = (("fleet", ("10.9.0.0/29",)),)  # 10.9.0.1 - 10.9.0.7; 10.9.0.8 keeps its own address
    with watching(namespace, networks=networks, capacities={peers.PEERS: 3}) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            listeners = []
            for _ in range(4):
                listener = socket.socket()
                listener.bind(("0.0.0.0", 0))
                listener.listen(64)
                listeners.append(listener)
            opened = 0
            for n in range(1, 9):
                for listener in listeners:
                    client = socket.create_connection((f"10.9.0.{n}", listener.getsockname()[1]))
                    server, _ = listener.accept()
                    client.close()
                    server.close()
                    opened += 1
            for listener in listeners:
                listener.close()
        wait_for(lambda: by(collector.snapshot(), "peer_connections_closed_total") == 2 * opened)
        snapshot = collector.snapshot()
        assert_sums_match(snapshot)
        assert by(snapshot, "peer_connections_opened_total") == 2 * opened
        rows = series(snapshot, "peer_connections_opened_total")
        # 3 peers fit; everything else is under OTHER, by role.
        assert len([key for key in rows if "other" not in key]) == 3
        assert by(snapshot, "peer_connections_opened_total", role="client", peer_address="other") + \
            by(snapshot, "peer_connections_opened_total", role="server", local_port="other") > 0
        grouped = by(snapshot, "peer_connections_opened_total", role="client", network="fleet")
        assert grouped == 0 or by(snapshot, "peer_connections_opened_total", role="client", network="fleet",
                                  peer_address="") == grouped
        assert "limits.tcp_peers" in caplog.text


@pytest.mark.scale
def test_churn_past_the_cap_adds_up_at_every_scrape_and_loses_nothing(namespace, tmp_path):
    """Loopback load generators, each to its own listener (a peer each way), past a cap of 4 peers, at
    least 10,000 connections a second in all: every scrape's sums over peers (OTHER included) are its
    totals, and at the end every connection the generators completed is counted, per the kernel too."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "tools"))
    from bench import loadgen

    binary = loadgen.build(tmp_path / "loadgen")
    generators, seconds = 6, 4.0
    with watching(namespace, capacities={peers.PEERS: 4}) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        runs = [subprocess.Popen(["ip", "netns", "exec", namespace.name, str(binary), "100000000", str(seconds),
                                  "1", "16"], stdout=subprocess.PIPE, text=True) for _ in range(generators)]
        scrapes = 0
        try:
            deadline = time.monotonic() + seconds + 30
            while any(run.poll() is None for run in runs) and time.monotonic() < deadline:
                assert_sums_match(collector.snapshot())
                scrapes += 1
            results = [loadgen.parse(run.communicate(timeout=30)[0]) for run in runs]
        finally:
            for run in runs:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        completed = sum(result.connections for result in results)
        rate = completed / max(result.seconds for result in results)
        assert sum(result.errors for result in results) == 0
        wait_for(lambda: by(collector.snapshot(), "peer_connections_closed_total") == 2 * completed, timeout=20)
        snapshot = collector.snapshot()
        assert_sums_match(snapshot)
        assert by(snapshot, "peer_connections_closed_total") == 2 * completed
        with namespace.enter():
            kernel = mib.counters()["Tcp"]
        assert by(snapshot, "peer_connections_opened_total", role="client") == kernel["ActiveOpens"] == completed
        assert by(snapshot, "peer_connections_opened_total", role="server") == kernel["PassiveOpens"] == completed
        assert by(snapshot, "peer_connections_closed_total", role="client", peer_address="other") > 0
        assert by(snapshot, "peer_bytes_total", direction="sent") == 2 * 16 * completed
        assert kernel_row_matches(collector, snapshot)
        print(f"{completed} connections at {rate:.0f}/s, {scrapes} scrapes")
        assert rate >= 10_000 and scrapes >= 10


def test_peers_beside_per_process_counts_and_records(namespace):
    """All three at once fit the program's stack (the peer step borrows the per-process step's slots) and
    each stays exact."""
    from gespann.bpf.channel import RecordChannel
    from gespann.collector.by_process import LabelSettings

    settings = AttachSettings(netns=namespace.inode, peers=True, by_process=True)
    with RecordChannel.for_reader("auto", "gsp_records") as channel, \
            ProbeSet.attach(PROBES, settings, records=channel) as probes, \
            KernelCollector(probes, namespace.path, records=channel,
                            label_settings=LabelSettings(process=True)) as collector:
        events = list(collector.events(0))  # from now on, records are kept for this consumer
        with namespace.enter():
            traffic = TcpTraffic()
            for sent, replied in EXCHANGES:
                traffic.exchange(sent, replied)
            traffic.close()
        n = len(EXCHANGES)
        wait_for(lambda: by(collector.snapshot(), "peer_connections_closed_total") == 2 * n)
        snapshot = collector.snapshot()
        events += collector.events(0.5)
    port = str(traffic.port)
    assert by(snapshot, "peer_connections_closed_total", role="client", peer_address="127.0.0.1", peer_port=port) == n
    assert by(snapshot, "peer_connections_closed_total", role="server", local_port=port) == n
    assert by(snapshot, "process_connections_total", outcome="close") == 2 * n
    assert by(snapshot, "peer_bytes_total", direction="sent") == by(snapshot, "process_bytes_total", direction="sent")
    assert len(events) == 2 * n and all(event.backend_address == "" for event in events)
