"""Every metric the collector produces: name (with unit), kind, labels, and meaning.

Exporters map these names to their own conventions (Prometheus adds the
`gespann_` prefix; DogStatsD uses dots), but never invent a metric the
catalogue does not have. Label values are bounded sets, listed here;
per-process and per-container labels are opt-in and capped by the collector.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Kind

PROTOCOLS = ("tcp", "udp")
ROLES = ("client", "server")
RESET_DIRECTIONS = ("sent", "received")
#: Failure reasons with names; any other errno is reported by its errno name (e.g. "EACCES"), and a
#: connect abandoned before any answer (no errno: close() on a connecting socket) as "aborted".
FAILURE_REASONS = ("refused", "timeout", "host_unreachable", "network_unreachable", "aborted")
DIRECTIONS = ("sent", "received")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


def _spec(name: str, kind: Kind, labels: tuple[str, ...], help: str) -> MetricSpec:
    return MetricSpec(name, kind, labels, help)


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

CATALOGUE: tuple[MetricSpec, ...] = (
    _spec("connections_open", G, ("protocol",),
          "Connections open now: TCP sockets in ESTABLISHED or later, UDP flows not yet idle-expired."),
    _spec("connections_opened_total", C, ("protocol", "role"),
          "Connections seen since start: TCP sockets that reached ESTABLISHED (once per side), new UDP flows."),
    _spec("connections_closed_total", C, ("protocol", "role"),
          "Connections that ended in an orderly way (TCP FIN, UDP idle expiry)."),
    _spec("connections_reset_total", C, ("direction",), "TCP connections ended by a reset, by who sent it."),
    _spec("connections_failed_total", C, ("reason",), "TCP active opens that never reached ESTABLISHED."),
    _spec("connections_idle", G, ("protocol",), "Open connections with no traffic for longer than idle_timeout."),
    _spec("bytes_total", C, ("protocol", "direction"), "Payload bytes, exact, including open connections."),
    _spec("datagrams_total", C, ("direction",), "UDP datagrams."),
    _spec("retransmits_total", C, (), "TCP segments retransmitted."),
    _spec("rtt_seconds", H, (), "Smoothed TCP round-trip time of each connection, observed when it ends."),
    _spec("connection_duration_seconds", H, ("protocol",), "Time from open to end of each connection."),
    _spec("connect_latency_seconds", H, (), "Time from SYN sent to ESTABLISHED for each TCP active open."),
    _spec("connection_ends_untracked_total", C, ("protocol",),
          "TCP connection ends seen without gespann's entry for the connection, so not counted as closed or "
          "reset: evicted from a full connection map (config limits.tcp_connections), or open before gespann "
          "started and not adopted (the adopted map, as large, was full)."),
    _spec("flows_evicted_total", C, ("protocol",),
          "UDP flows the kernel evicted from the full flow map (config limits.udp_flows) before they went idle: "
          "counted as closed, their own figures incomplete; datagram and byte totals stay exact."),
    _spec("records_lost_total", C, ("reader",),
          "Connection records lost: the kernel's buffer was full (reader ringbuf/perf), or gespann's backlog."),
    _spec("process_connections_total", C, ("comm", "container", "protocol", "outcome"),
          "Ended connections by process and/or container (opt-in labels; beyond the cap: 'other')."),
    _spec("process_bytes_total", C, ("comm", "container", "protocol", "direction"),
          "Payload bytes of ended connections by process and/or container (opt-in, capped like the above)."),
    _spec("probe_info", G, ("probe", "mode"), "1 for each attached probe, with the attach flavour it uses."),
    _spec("build_info", G, ("version",), "1, labelled with gespann's version."),
)

BY_NAME = {spec.name: spec for spec in CATALOGUE}
