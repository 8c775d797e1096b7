"""Connection records, exact: one event per ended connection, in a namespace of the test's own.

Every connection the test makes is known in advance (ports, bytes, outcome,
process), so the events must match it field by field, in every attach flavour
and through both readers. Also here: the idle gauge and container ids.
"""
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kernel_features import require
from namespaces import Namespace
from probe_flavours import FLAVOURS
from tcp_traffic import CLOSED_PORT, LOOPBACK, TcpTraffic, close_orderly, refused

from gespann.bpf import features
from gespann.bpf.channel import RINGBUF_SIZE, RecordChannel
from gespann.collector.by_process import LabelSettings
from gespann.collector.collector import KernelCollector
from gespann.collector.containers import cgroup2_mount
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets

pytestmark = pytest.mark.root
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES)
EXCHANGES = [(1, 0), (1000, 3), (70000, 250000)]  # (client sends, server replies)
REFUSED = 2
COMM = Path("/proc/self/comm").read_text().strip()


class Watching:
    """Probes scoped to a namespace, with a record channel, and the collector over them."""

    def __init__(self, namespace: Namespace, mode="auto", perf_event_link="auto", reader="auto", idle_timeout=60.0,
                 label_settings=LabelSettings(), capacities=None, ringbuf_size=RINGBUF_SIZE):
        self.channel = RecordChannel.for_reader(reader, "gsp_records", ringbuf_size)
        settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=namespace.inode,
                                  by_process=label_settings.enabled, capacities=capacities or {})
        self.probes = ProbeSet.attach(PROBES, settings, records=self.channel)
        self.collector = KernelCollector(self.probes, namespace.path, records=self.channel,
                                         idle_timeout=idle_timeout, label_settings=label_settings)

    def events(self, expected: int, timeout: float = 5.0) -> list:
        """Exactly `expected` events (waiting up to `timeout` s for them), then a check that no more come."""
        got, deadline = [], time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(self.collector.events(timeout=0.1))
        got.extend(self.collector.events(timeout=0.2))
        assert len(got) == expected, got
        return got

    def close(self):
        self.collector.close()
        self.probes.close()
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def own_cgroup_id() -> int:
    """The cgroup-v2 id of this process: the inode of its cgroup2 directory (1, the root's, where
    no cgroup2 hierarchy is mounted, as in the kernel matrix's guests)."""
    if cgroup2_mount() is None:
        return 1
    path = next(line.split("::", 1)[1].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.startswith("0::"))
    return os.stat(cgroup2_mount() + path).st_ino


def by_ports(events) -> dict:
    return {(e.role, e.local_port, e.remote_port): e for e in events}


def check_exact(events, family, exchanges, client_ports):
    """The events of `exchanges` (one client and one server event each), then resets, then refused."""
    address = LOOPBACK[family]
    pid = os.getpid()
    cgroup = own_cgroup_id()
    for e in events:
        assert (e.protocol, e.local_address, e.remote_address) == ("tcp", address, address)
        assert e.cgroup_id == (cgroup if e.pid else 0) and e.container_id == ""
        assert 0 < e.duration_seconds < 5
    index = by_ports(events)
    for (sent, replied), (client_port, server_port) in zip(exchanges, client_ports["exchange"]):
        client = index[("client", client_port, server_port)]
        server = index[("server", server_port, client_port)]
        assert (client.outcome, client.reason, client.bytes_sent, client.bytes_received) == ("close", "", sent, replied)
        assert (server.outcome, server.reason, server.bytes_sent, server.bytes_received) == ("close", "", replied, sent)
        for e in (client, server):
            assert (e.pid, e.comm) == (pid, COMM)  # the server's owner is known from its close()
            assert 0 < e.rtt_seconds < 1
    for by_client, (client_port, server_port) in client_ports["reset"]:
        client = index[("client", client_port, server_port)]
        server = index[("server", server_port, client_port)]
        sender, receiver = (client, server) if by_client else (server, client)
        assert (sender.outcome, sender.reason) == ("reset", "sent")
        assert (receiver.outcome, receiver.reason) == ("reset", "received")
        assert (client.pid, client.comm) == (pid, COMM)
        assert client.bytes_sent == client.bytes_received == 0
    failed = [e for e in events if e.outcome == "failed"]
    assert [(e.reason, e.role, e.remote_port, e.pid, e.comm, e.rtt_seconds) for e in failed] == \
        [("refused", "client", CLOSED_PORT, pid, COMM, None)] * REFUSED


def make_traffic(family) -> dict:
    """The connections check_exact expects, made in the calling thread's namespace; their ports."""
    traffic = TcpTraffic(family)
    ports = {"exchange": [], "reset": []}
    for sent, replied in EXCHANGES:
        ports["exchange"].append(_exchange(traffic, sent, replied))
    for by_client in (True, False):
        client, server = traffic.connect()
        ports["reset"].append((by_client, (client.getsockname()[1], traffic.port)))
        closing, other = (client, server) if by_client else (server, client)
        closing.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        closing.close()
        try:
            other.recv(1)
        except ConnectionResetError:
            pass
        other.close()
    for _ in range(REFUSED):
        refused(family)
    traffic.close()
    return ports


def _exchange(traffic, sent, replied):
    client, server = traffic.connect()
    ports = (client.getsockname()[1], traffic.port)
    client.sendall(b"a" * sent)
    server.recv(sent, socket.MSG_WAITALL)
    server.sendall(b"b" * replied)
    client.recv(replied, socket.MSG_WAITALL)
    close_orderly(client, server)
    return ports


EVENTS = 2 * len(EXCHANGES) + 2 * 2 + REFUSED


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_every_connection_ends_in_one_exact_record(namespace, mode, perf_event_link, needed):
    require(*(feature() for feature in needed))
    with Watching(namespace, mode, perf_event_link) as watching:
        assert watching.probes["tcp_lifecycle"].flavour.mode == mode
        with namespace.enter():
            ports = make_traffic(socket.AF_INET)
        events = watching.events(EVENTS)
        check_exact(events, socket.AF_INET, EXCHANGES, ports)
        snapshot = watching.collector.snapshot()
        assert snapshot["records_lost_total"].total() == 0
        # A slow guest may retransmit (a tail loss probe): each record must carry what the aggregate counted.
        assert sum(e.retransmits for e in events) == snapshot["retransmits_total"].total()


@pytest.mark.parametrize("reader", ["ringbuf", "perf"])
def test_records_over_ipv6_through_either_reader(namespace, reader):
    if reader == "ringbuf":
        require(features.ringbuf())
    with Watching(namespace, reader=reader) as watching:
        assert watching.channel.kind == reader
        with namespace.enter():
            ports = make_traffic(socket.AF_INET6)
        events = watching.events(EVENTS)
        check_exact(events, socket.AF_INET6, EXCHANGES, ports)
        snapshot = watching.collector.snapshot()
        assert sum(e.retransmits for e in events) == snapshot["retransmits_total"].total()
        lost = snapshot["records_lost_total"]
        assert dict(lost.series) == {(("reader", reader),): 0}


def test_idle_gauge_counts_open_connections_without_payload(namespace):
    with Watching(namespace, idle_timeout=0.5) as watching:
        with namespace.enter():
            traffic = TcpTraffic()
            quiet = traffic.connect()
            busy = traffic.connect()
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:  # keeps `busy` active while `quiet` idles past 0.5 s
                busy[0].sendall(b"x")
                busy[1].recv(1)
                time.sleep(0.05)
            snapshot = watching.collector.snapshot()
            assert snapshot["connections_open"].value(protocol="tcp") == 4
            assert snapshot["connections_idle"].value(protocol="tcp") == 2  # both sides of `quiet`
            quiet[0].sendall(b"y")
            quiet[1].recv(1)
            assert watching.collector.snapshot()["connections_idle"].value(protocol="tcp") == 0
            for s in (*quiet, *busy):
                s.close()
            traffic.close()


@pytest.fixture
def container_cgroup():
    """A cgroup named as a container runtime names one, removed afterwards."""
    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup2 hierarchy is mounted: cgroup ids have no paths to resolve")
    container = secrets.token_hex(32)
    parent = Path(root) / f"gespann-test-{os.getpid()}"
    path = parent / f"cri-containerd-{container}.scope"
    path.mkdir(parents=True)
    yield container, path
    path.rmdir()
    parent.rmdir()


def test_a_containers_connections_carry_its_id(namespace, container_cgroup):
    container, path = container_cgroup
    with Watching(namespace) as watching:
        with namespace.enter():
            traffic = TcpTraffic()
            code = f"import socket; socket.create_connection(('127.0.0.1', {traffic.port})).close()"
            procs = path / "cgroup.procs"
            child = subprocess.run(
                [sys.executable, "-c", code], timeout=30, check=True,
                preexec_fn=lambda: procs.write_text(str(os.getpid())))  # joins the cgroup before it runs
            server, _ = traffic.listener.accept()
            server.close()
            traffic.close()
        assert child.returncode == 0
        client = next(e for e in watching.events(2) if e.role == "client")
        assert client.container_id == container
        assert client.cgroup_id == os.stat(path).st_ino
        assert client.comm == os.path.basename(sys.executable)[:15] and client.pid not in (0, os.getpid())


def test_connections_open_before_the_start_end_once_with_a_record_marked_pre_existing(namespace):
    """Adopted at start by their cookies: each end is counted, with a record carrying the bytes moved since
    the start and the mark; the role is the listener's side."""
    with namespace.enter():
        traffic = TcpTraffic()
        earlier = [traffic.connect() for _ in range(2)]
        for client, server in earlier:
            client.sendall(b"x" * 100)
            server.recv(100, socket.MSG_WAITALL)
    with Watching(namespace) as watching:
        for client, server in earlier:
            client.sendall(b"y" * 7)
            server.recv(7, socket.MSG_WAITALL)
            server.sendall(b"z" * 3)
            client.recv(3, socket.MSG_WAITALL)
            close_orderly(client, server)
        traffic.close()
        events = watching.events(4)
        assert sorted((e.role, e.outcome, e.bytes_sent, e.bytes_received, e.preexisting) for e in events) == [
            ("client", "close", 7, 3, True), ("client", "close", 7, 3, True),
            ("server", "close", 3, 7, True), ("server", "close", 3, 7, True)]
        snapshot = watching.collector.snapshot()
        assert snapshot["connections_closed_total"].total() == 4
        assert snapshot["connection_ends_untracked_total"].total() == 0
        assert {tuple(v for _, v in k): n for k, n in snapshot["bytes_total"].series.items()} == {
            ("sent", "tcp"): 20, ("received", "tcp"): 20}


def test_per_process_counts_are_exact_whatever_records_are_lost(namespace, caplog):
    """12,000 ends while nobody reads records: the ring buffer overflows (and says so), but the kernel
    counts every end by its owner, so the per-process figures stay exact."""
    n = 6000  # each ends on both sides: 12,000 records of 136 bytes, more than a 1 MiB ring holds
    with Watching(namespace, label_settings=LabelSettings(process=True), ringbuf_size=1 << 20) as watching:
        with namespace.enter():
            traffic = TcpTraffic()
            for _ in range(n):
                traffic.exchange(3, 5)
            traffic.close()
        deadline = time.monotonic() + 10
        while True:
            snapshot = watching.collector.snapshot()
            connections = {tuple(v for _, v in key): n
                           for key, n in snapshot["process_connections_total"].series.items()}
            if sum(connections.values()) >= 2 * n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert snapshot["records_lost_total"].total() > 0, "the ring buffer did not overflow: the test proves nothing"
        watching.collector.snapshot()  # said once, not at every scrape
        said = [r.getMessage() for r in caplog.records if "connection records lost" in r.getMessage()]
        assert len(said) == 1 and "events.ringbuf_bytes" in said[0], said
        assert connections == {(COMM, "", "close", "tcp"): 2 * n}
        payload = {tuple(v for _, v in key): n for key, n in snapshot["process_bytes_total"].series.items()}
        assert payload == {(COMM, "", "sent", "tcp"): 8 * n, (COMM, "", "received", "tcp"): 8 * n}


@pytest.mark.parametrize("max_series, owners", [
    pytest.param(1, None, id="label-cap"),
    pytest.param(100, 2, id="kernel-cap"),  # room for one owner, and OTHER_OWNER's row
])
def test_per_process_counts_are_capped_with_the_rest_under_other(namespace, max_series, owners, caplog):
    """The second process is counted under `other`: past the label cap (labels.max_series), or past the
    kernel's by-process map (its capacity forced to one owner), which is logged once."""
    capacities = {} if owners is None else {tcp_lifecycle.BY_PROCESS: owners}
    with Watching(namespace, label_settings=LabelSettings(process=True, max_series=max_series),
                  capacities=capacities) as watching:
        with namespace.enter():
            traffic = TcpTraffic()
            traffic.exchange(10, 20)  # both sides this process's: the one label set the cap admits
            watching.collector.snapshot()
            code = ("import socket; open('/proc/self/comm', 'w').write('gsp-child'); "
                    f"c = socket.create_connection(('127.0.0.1', {traffic.port})); c.sendall(b'12345'); c.close()")
            subprocess.run([sys.executable, "-c", code], timeout=30, check=True)
            server, _ = traffic.listener.accept()
            assert server.recv(5, socket.MSG_WAITALL) == b"12345"
            assert server.recv(1) == b""
            server.close()
            traffic.close()
        deadline = time.monotonic() + 5
        while True:
            snapshot = watching.collector.snapshot()
            connections = {tuple(v for _, v in key): n
                           for key, n in snapshot["process_connections_total"].series.items()}
            if sum(connections.values()) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert connections == {(COMM, "", "close", "tcp"): 3, ("other", "", "close", "tcp"): 1}
        payload = {tuple(v for _, v in key): n for key, n in snapshot["process_bytes_total"].series.items()}
        assert payload == {(COMM, "", "sent", "tcp"): 30, (COMM, "", "received", "tcp"): 35,
                           ("other", "", "sent", "tcp"): 5, ("other", "", "received", "tcp"): 0}
        warned = [r for r in caplog.records if "by-process map" in r.getMessage()]
        assert len(warned) == (0 if owners is None else 1)


def test_a_containers_udp_flows_carry_its_id(namespace, container_cgroup):
    """A UDP flow's event names the container of the process that sent on it, as a TCP record does."""
    from gespann.probes.udp import UDP_PROBES

    container, path = container_cgroup
    channel = RecordChannel.for_reader("auto", "gsp_records")
    settings = AttachSettings(netns=namespace.inode)
    with channel, ProbeSet.attach(UDP_PROBES, settings, records=channel) as probes, \
            KernelCollector(probes, namespace.path, records=channel, idle_timeout=0.1,
                            udp_flow_timeout=0.2) as collector:
        with namespace.enter():
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.bind(("127.0.0.1", 0))
            code = ("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                    f".sendto(b'x' * 5, ('127.0.0.1', {receiver.getsockname()[1]}))")
            procs = path / "cgroup.procs"
            subprocess.run([sys.executable, "-c", code], timeout=30, check=True,
                           preexec_fn=lambda: procs.write_text(str(os.getpid())))
            assert receiver.recv(16) == b"x" * 5
            receiver.close()
        events, deadline = [], time.monotonic() + 10
        while len(events) < 2 and time.monotonic() < deadline:
            events.extend(collector.events(timeout=0.2))
        sender = next(e for e in events if e.protocol == "udp" and e.role == "client")
        assert (sender.bytes_sent, sender.cgroup_id) == (5, os.stat(path).st_ino)
        assert sender.container_id == container
