"""A collector fed by the tests, and two snapshots with known figures (A, then B after some traffic).

Histogram sums are powers of two, so every mean is exact in binary and the
expected values below can be compared with ==.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from gespann.collector import BY_NAME, ConnectionEvent, Histogram, Labels, Metric, Snapshot, labels


class FedCollector:
    """What the exporters read, set by the test: the current snapshot and queued connection events."""

    def __init__(self, snapshot: Snapshot):
        self.current = snapshot
        self._events: queue.Queue[ConnectionEvent] = queue.Queue()
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self.current

    def change_to(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.current = snapshot

    def feed(self, *events: ConnectionEvent) -> None:
        for event in events:
            self._events.put(event)

    def events(self, timeout: float) -> Iterator[ConnectionEvent]:
        try:
            yield self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                yield self._events.get_nowait()
            except queue.Empty:
                return


def snapshot(timestamp: float, **series: dict[Labels, object]) -> Snapshot:
    """A snapshot of catalogue metrics, each given as {labels: value}."""
    return Snapshot(timestamp, {name: Metric.of(BY_NAME[name], values)
                                for name, values in series.items()})


TCP, UDP = labels(protocol="tcp"), labels(protocol="udp")
RTT_BOUNDS = (0.0001, 0.001, 0.01)
DURATION_BOUNDS = (0.01, 0.1, 1.0, 10.0)
CONNECT_BOUNDS = (0.001, 0.01, 0.1)
PROBES = {labels(probe="inet_sock_set_state", mode="tracepoint"): 1, labels(probe="tcp_send_reset", mode="kprobe"): 1}


def _opened(tcp_client: int, tcp_server: int, udp_client: int) -> dict:
    return {labels(protocol="tcp", role="client"): tcp_client, labels(protocol="tcp", role="server"): tcp_server,
            labels(protocol="udp", role="client"): udp_client}


def _bytes(tcp_sent: int, tcp_received: int, udp_sent: int, udp_received: int) -> dict:
    return {labels(protocol="tcp", direction="sent"): tcp_sent,
            labels(protocol="tcp", direction="received"): tcp_received,
            labels(protocol="udp", direction="sent"): udp_sent,
            labels(protocol="udp", direction="received"): udp_received}


def _peer(**values: str) -> Labels:
    """A per-peer series' labels: every peer label, empty but for those given."""
    from gespann.probes.tcp.peers import PEER_LABELS

    return labels(**{**dict.fromkeys(PEER_LABELS, ""), **values})


SERVICE = dict(role="client", peer_address="10.96.0.10", peer_port="80")
BACKEND_A = dict(SERVICE, backend_address="10.2.1.2", backend_port="80")
BACKEND_B = dict(SERVICE, backend_address="10.2.3.2", backend_port="80")
SERVED = dict(role="server", local_port="8080")


FIGURES_A = snapshot(
    1_700_000_000.0,
    connections_open={TCP: 3, UDP: 2},
    connections_opened_total=_opened(10, 7, 4),
    connections_closed_total=_opened(6, 4, 2),
    connections_reset_total={labels(direction="sent"): 1, labels(direction="received"): 2},
    connections_failed_total={labels(reason="refused"): 2, labels(reason="timeout"): 1},
    connections_idle={TCP: 1, UDP: 0},
    bytes_total=_bytes(1000, 5000, 300, 200),
    datagrams_total={labels(direction="sent"): 6, labels(direction="received"): 4},
    retransmits_total={(): 2},
    connection_ends_untracked_total={TCP: 3},
    connection_ends_unseen_total={labels(protocol="tcp", role="client"): 1, labels(protocol="tcp", role="server"): 0},
    connection_opens_unseen_total={TCP: 0},
    flows_evicted_total={UDP: 0},
    flow_inserts_failed_total={labels(protocol="udp", role="client"): 0, labels(protocol="udp", role="server"): 0},
    packets_dropped_total={labels(protocol="tcp", reason="NETFILTER_DROP"): 3,
                           labels(protocol="udp", reason="NO_SOCKET"): 1},
    inbound_refused_total={labels(protocol="tcp", local_port="22"): 2, labels(protocol="udp", local_port="53"): 1},
    rtt_seconds={(): Histogram(RTT_BOUNDS, (1, 2, 1, 0), 0.0078125)},
    connection_duration_seconds={TCP: Histogram(DURATION_BOUNDS, (0, 1, 2, 0, 0), 2.5),
                                 UDP: Histogram(DURATION_BOUNDS, (0, 0, 1, 0, 0), 0.5)},
    connect_latency_seconds={(): Histogram(CONNECT_BOUNDS, (3, 1, 0, 0), 0.009765625)},
    records_lost_total={labels(reader="ringbuf"): 1},
    process_connections_total={labels(comm="curl", container="4f1d", protocol="tcp", outcome="close"): 4},
    process_bytes_total={labels(comm="curl", container="4f1d", protocol="tcp", direction="sent"): 700},
    probe_runs_missed_total={labels(probe="tcp_lifecycle"): 0, labels(probe="packet_drops"): 1},
    peer_connections_failed_total={_peer(**BACKEND_B, reason="refused"): 2, _peer(**BACKEND_A, reason="timeout"): 1},
    peer_bytes_total={_peer(**BACKEND_A, direction="sent"): 600, _peer(**SERVED, direction="received"): 400},
    peer_connections_opened_total={_peer(**BACKEND_A): 5, _peer(**SERVED): 3},
    peer_connections_closed_total={_peer(**BACKEND_A): 4, _peer(**SERVED): 3},
    peer_connections_reset_total={_peer(**BACKEND_A, direction="received"): 1},
    peer_retransmits_total={_peer(**BACKEND_A): 2},
    peer_drops_total={_peer(**SERVED): 1},
    probe_info=PROBES,
    build_info={labels(version="0.1.0"): 1},
)

FIGURES_B = snapshot(
    1_700_000_010.0,
    connections_open={TCP: 2, UDP: 2},
    connections_opened_total=_opened(13, 7, 5),
    connections_closed_total=_opened(9, 4, 2),
    connections_reset_total={labels(direction="sent"): 1, labels(direction="received"): 3},
    connections_failed_total={labels(reason="refused"): 3, labels(reason="timeout"): 1, labels(reason="EACCES"): 1},
    connections_idle={TCP: 0, UDP: 1},
    bytes_total=_bytes(1500, 9000, 300, 260),
    datagrams_total={labels(direction="sent"): 6, labels(direction="received"): 5},
    retransmits_total={(): 5},
    connection_ends_untracked_total={TCP: 4},
    connection_ends_unseen_total={labels(protocol="tcp", role="client"): 1, labels(protocol="tcp", role="server"): 2},
    connection_opens_unseen_total={TCP: 1},
    flows_evicted_total={UDP: 2},
    flow_inserts_failed_total={labels(protocol="udp", role="client"): 0, labels(protocol="udp", role="server"): 1},
    packets_dropped_total={labels(protocol="tcp", reason="NETFILTER_DROP"): 5,
                           labels(protocol="udp", reason="NO_SOCKET"): 1,
                           labels(protocol="other", reason="unknown"): 2},
    inbound_refused_total={labels(protocol="tcp", local_port="22"): 4, labels(protocol="udp", local_port="53"): 1,
                           labels(protocol="tcp", local_port="other"): 7},
    rtt_seconds={(): Histogram(RTT_BOUNDS, (2, 3, 2, 1), 0.03125)},
    connection_duration_seconds={TCP: Histogram(DURATION_BOUNDS, (0, 2, 3, 0, 1), 14.5),
                                 UDP: Histogram(DURATION_BOUNDS, (0, 0, 1, 1, 0), 5.5)},
    connect_latency_seconds={(): Histogram(CONNECT_BOUNDS, (4, 2, 0, 0), 0.015625)},
    records_lost_total={labels(reader="ringbuf"): 3},
    process_connections_total={labels(comm="curl", container="4f1d", protocol="tcp", outcome="close"): 6,
                               labels(comm="other", container="4f1d", protocol="tcp", outcome="reset"): 1},
    process_bytes_total={labels(comm="curl", container="4f1d", protocol="tcp", direction="sent"): 900},
    probe_runs_missed_total={labels(probe="tcp_lifecycle"): 0, labels(probe="packet_drops"): 2},
    peer_connections_failed_total={_peer(**BACKEND_B, reason="refused"): 3, _peer(**BACKEND_A, reason="timeout"): 1},
    peer_bytes_total={_peer(**BACKEND_A, direction="sent"): 900, _peer(**SERVED, direction="received"): 600},
    peer_connections_opened_total={_peer(**BACKEND_A): 10, _peer(**SERVED): 6},
    peer_connections_closed_total={_peer(**BACKEND_A): 8, _peer(**SERVED): 6},
    peer_connections_reset_total={_peer(**BACKEND_A, direction="received"): 2},
    peer_retransmits_total={_peer(**BACKEND_A): 4},
    peer_drops_total={_peer(**SERVED): 2},
    probe_info=PROBES,
    build_info={labels(version="0.1.0"): 1},
)


def _events(open_tcp, open_udp, close_tcp, close_udp, reset_sent, reset_received, **failed) -> dict:
    def key(event_type, protocol, *reset_reason):  # Prometheus stores an empty label as no label
        return frozenset({"event_type": event_type, "protocol": protocol,
                          **{"reset_reason": reason for reason in reset_reason}}.items())

    return {key("open", "tcp"): open_tcp, key("open", "udp"): open_udp,
            key("close", "tcp"): close_tcp, key("close", "udp"): close_udp,
            key("reset", "tcp", "sent"): reset_sent, key("reset", "tcp", "received"): reset_received,
            **{key("failed", "tcp", reason): n for reason, n in failed.items()}}


def _bandwidth(tcp_sent, tcp_received, udp_sent, udp_received) -> dict:
    def key(direction, protocol):
        return frozenset({"direction": direction, "protocol": protocol}.items())

    return {key("sent", "tcp"): tcp_sent, key("received", "tcp"): tcp_received,
            key("sent", "udp"): udp_sent, key("received", "udp"): udp_received}


NO_LABELS = frozenset()

#: The original gespann's names, worked out by hand from the figures: name -> {labels: value}.
ORIGINAL_A = {
    "gespann_open_connections": {NO_LABELS: 5},
    "gespann_closed_connections_total": {NO_LABELS: 12},
    "gespann_reset_connections_total": {NO_LABELS: 3},
    "gespann_failed_connections_total": {NO_LABELS: 3},
    "gespann_idle_connections": {NO_LABELS: 1},
    "gespann_total_connections": {NO_LABELS: 21},
    "gespann_bytes_sent_total": {NO_LABELS: 1300},
    "gespann_bytes_received_total": {NO_LABELS: 5200},
    "gespann_avg_connection_duration_ms": {NO_LABELS: 750.0},  # (2.5 + 0.5) s / 4
    "gespann_avg_rtt_microseconds": {NO_LABELS: 1953.125},  # 0.0078125 s / 4
    "gespann_connection_bandwidth_bytes_total": _bandwidth(1000, 5000, 300, 200),
    "gespann_tcp_connections_total": {NO_LABELS: 17},
    "gespann_udp_connections_total": {NO_LABELS: 4},
    "gespann_connection_events_total": _events(17, 4, 10, 2, 1, 2, refused=2, timeout=1),
}

ORIGINAL_B = {
    "gespann_open_connections": {NO_LABELS: 4},
    "gespann_closed_connections_total": {NO_LABELS: 15},
    "gespann_reset_connections_total": {NO_LABELS: 4},
    "gespann_failed_connections_total": {NO_LABELS: 5},
    "gespann_idle_connections": {NO_LABELS: 1},
    "gespann_total_connections": {NO_LABELS: 25},
    "gespann_bytes_sent_total": {NO_LABELS: 1800},
    "gespann_bytes_received_total": {NO_LABELS: 9260},
    "gespann_avg_connection_duration_ms": {NO_LABELS: 2500.0},  # (14.5 + 5.5) s / 8
    "gespann_avg_rtt_microseconds": {NO_LABELS: 3906.25},  # 0.03125 s / 8
    "gespann_connection_bandwidth_bytes_total": _bandwidth(1500, 9000, 300, 260),
    "gespann_tcp_connections_total": {NO_LABELS: 20},
    "gespann_udp_connections_total": {NO_LABELS: 5},
    "gespann_connection_events_total": _events(20, 5, 13, 2, 1, 3, refused=3, timeout=1, EACCES=1),
}

#: Original names that count: they may never go down.
ORIGINAL_COUNTERS = sorted(name for name in ORIGINAL_A if name not in (
    "gespann_open_connections", "gespann_idle_connections",
    "gespann_avg_connection_duration_ms", "gespann_avg_rtt_microseconds"))


def catalogue_samples(figures: Snapshot) -> dict[str, dict[frozenset, float]]:
    """The figures as Prometheus samples: `gespann_<name>`, histograms as cumulative _bucket plus _sum and _count;
    an empty label is no label, as Prometheus stores it."""
    samples: dict[str, dict[frozenset, float]] = {}
    for name, metric in figures.metrics.items():
        for key, value in metric.series.items():
            key = tuple((label, text) for label, text in key if text != "")
            if isinstance(value, Histogram):
                for bound, count in value.cumulative():
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    samples.setdefault(f"gespann_{name}_bucket", {})[frozenset({*key, ("le", le)})] = count
                samples.setdefault(f"gespann_{name}_sum", {})[frozenset(key)] = value.sum
                samples.setdefault(f"gespann_{name}_count", {})[frozenset(key)] = value.count
            else:
                samples.setdefault(f"gespann_{name}", {})[frozenset(key)] = value
    return samples


def event(**overrides) -> ConnectionEvent:
    """A TCP client connection that closed, with every field set; override what a test is about."""
    fields = dict(timestamp=1_700_000_000.25, protocol="tcp", role="client", outcome="close", reason="",
                  pid=4242, comm="curl", local_address="10.0.0.1", local_port=43210,
                  remote_address="93.184.216.34", remote_port=443, bytes_sent=512, bytes_received=2048,
                  duration_seconds=0.1205, rtt_seconds=0.012345, retransmits=1, datagrams_sent=0,
                  datagrams_received=0, cgroup_id=77, container_id="")
    fields.update(overrides)
    return ConnectionEvent(**fields)
