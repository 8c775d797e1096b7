"""Connection events as text: a tcplife-like table for people, JSON lines for programs.

`gespann trace` prints `table_header()` then `table_line(event)` per event,
or `json_line(event)` per event with --json; the jsonl exporter writes the same
JSON lines to a file.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Callable, Optional

from gespann.collector import ConnectionEvent

#: The JSON object's keys, in order: a contract with whoever reads the lines, so renaming one is a breaking change.
JSON_KEYS = (
    "timestamp", "protocol", "role", "outcome", "reason", "pid", "comm",
    "local_address", "local_port", "remote_address", "remote_port",
    "bytes_sent", "bytes_received", "duration_seconds", "rtt_seconds", "retransmits",
    "datagrams_sent", "datagrams_received", "cgroup_id", "container_id", "preexisting", "drops", "drop_reason",
    "backend_address", "backend_port",
)


def json_object(event: ConnectionEvent) -> dict:
    """The event as a JSON-ready dict: numbers stay numbers, a missing RTT (UDP) is null."""
    return {key: getattr(event, key) for key in JSON_KEYS}


#: A JSON string for a str (non-ASCII kept, as ensure_ascii=False does), from a cache: most repeat.
_string = functools.lru_cache(maxsize=4096)(encode_basestring)


def json_line(event: ConnectionEvent) -> str:
    """One line of JSON, no trailing newline: exactly `json.dumps(json_object(event))` with compact
    separators and non-ASCII kept, written out field by field, since trace mode and the jsonl exporter
    write one a record and json.dumps costs three times as much. The keys are JSON_KEYS, in order.

    The event unpacks into locals in its fields' order (ConnectionEvent's order is JSON_KEYS'), and
    floats print as their repr, which is what json.dumps prints for a finite float; a NaN or an
    infinity, which json.dumps spells otherwise, takes json.dumps itself."""
    (timestamp, protocol, role, outcome, reason, pid, comm, local_address, local_port, remote_address, remote_port,
     bytes_sent, bytes_received, duration, rtt, retransmits, datagrams_sent, datagrams_received, cgroup_id,
     container_id, preexisting, drops, drop_reason, backend_address, backend_port) = event
    if not math.isfinite(timestamp + duration + (rtt or 0.0)):
        return json.dumps(json_object(event), separators=(",", ":"), ensure_ascii=False)
    s = _string
    return (f'{{"timestamp":{timestamp!r},"protocol":{s(protocol)},"role":{s(role)},'
            f'"outcome":{s(outcome)},"reason":{s(reason)},"pid":{pid:d},"comm":{s(comm)},'
            f'"local_address":{s(local_address)},"local_port":{local_port:d},'
            f'"remote_address":{s(remote_address)},"remote_port":{remote_port:d},'
            f'"bytes_sent":{bytes_sent:d},"bytes_received":{bytes_received:d},'
            f'"duration_seconds":{duration!r},"rtt_seconds":{"null" if rtt is None else repr(rtt)},'
            f'"retransmits":{retransmits:d},"datagrams_sent":{datagrams_sent:d},'
            f'"datagrams_received":{datagrams_received:d},"cgroup_id":{cgroup_id:d},'
            f'"container_id":{s(container_id)},"preexisting":{"true" if preexisting else "false"},'
            f'"drops":{drops:d},"drop_reason":{s(drop_reason)},'
            f'"backend_address":{s(backend_address)},"backend_port":{backend_port:d}}}')


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    right: bool  # numbers align right
    text: Callable[[ConnectionEvent], str]

    def cell(self, value: str) -> str:
        return value.rjust(self.width) if self.right else value.ljust(self.width)


def _clock(timestamp: float) -> str:
    """Local wall-clock time to the millisecond, as tcplife -T prints it (with milliseconds)."""
    return time.strftime("%H:%M:%S", time.localtime(timestamp)) + f".{int(timestamp * 1000) % 1000:03d}"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _outcome(event: ConnectionEvent) -> str:
    return f"{event.outcome}/{event.reason}" if event.reason else event.outcome


def _milliseconds(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


TABLE_COLUMNS = (
    Column("TIME", 12, False, lambda e: _clock(e.timestamp)),
    Column("PID", 7, True, lambda e: str(e.pid)),
    Column("COMM", 15, False, lambda e: e.comm[:15]),
    Column("PROTO", 5, False, lambda e: e.protocol),
    Column("ROLE", 6, False, lambda e: e.role),
    Column("LOCAL", 21, False, lambda e: _endpoint(e.local_address, e.local_port)),
    Column("REMOTE", 21, False, lambda e: _endpoint(e.remote_address, e.remote_port)),
    Column("OUTCOME", 20, False, _outcome),
    Column("TX_B", 10, True, lambda e: str(e.bytes_sent)),
    Column("RX_B", 10, True, lambda e: str(e.bytes_received)),
    Column("DUR_MS", 10, True, lambda e: _milliseconds(e.duration_seconds)),
    Column("RTT_MS", 8, True, lambda e: _milliseconds(e.rtt_seconds)),
)


def table_header() -> str:
    return " ".join(column.cell(column.header) for column in TABLE_COLUMNS).rstrip()


def table_line(event: ConnectionEvent) -> str:
    """One row; a value wider than its column (an IPv6 endpoint) widens the row rather than being cut."""
    return " ".join(column.cell(column.text(event)) for column in TABLE_COLUMNS).rstrip()
