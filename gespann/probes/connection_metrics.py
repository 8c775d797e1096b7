"""The metrics every connection-following probe declares alike, TCP's and UDP's: each adds its own series,
labelled by protocol, to the same metric."""

from __future__ import annotations

from ..figures import counter, gauge, histogram

CONNECTIONS_OPEN = gauge(
    "connections_open", ("protocol",),
    "Connections open now: TCP sockets in ESTABLISHED or later, UDP flows not yet idle-expired.",
    dogstatsd="connections.open")
CONNECTIONS_OPENED = counter(
    "connections_opened_total", ("protocol", "role"),
    "Connections seen since start: TCP sockets that reached ESTABLISHED (once per side), new UDP flows.",
    dogstatsd="connections.opened")
CONNECTIONS_CLOSED = counter(
    "connections_closed_total", ("protocol", "role"),
    "Connections that ended in an orderly way (TCP FIN, UDP idle expiry).",
    dogstatsd="connections.closed")
CONNECTIONS_IDLE = gauge(
    "connections_idle", ("protocol",), "Open connections with no traffic for longer than idle_timeout.",
    dogstatsd="connections.idle")
BYTES = counter(
    "bytes_total", ("protocol", "direction"), "Payload bytes, exact, including open connections.",
    unit="bytes", dogstatsd="bytes")
CONNECTION_DURATION = histogram(
    "connection_duration_seconds", ("protocol",), "Time from open to end of each connection.",
    dogstatsd="connections.duration_seconds")

#: In the order the catalogue lists them.
SHARED = (CONNECTIONS_OPEN, CONNECTIONS_OPENED, CONNECTIONS_CLOSED, CONNECTIONS_IDLE, BYTES, CONNECTION_DURATION)
