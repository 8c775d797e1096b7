"""Connection events as text: a tcplife-like table for people, JSON lines for programs.

`gespann trace` prints `table_header()` then `table_line(event)` per event,
or `json_line(event)` per event with --json; the jsonl exporter writes the same
JSON lines to a file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Optional

from gespann.collector import ConnectionEvent

#: The JSON object's keys, in order: a contract with whoever reads the lines, so renaming one is a breaking change.
JSON_KEYS = (
    "timestamp", "protocol", "role", "outcome", "reason", "pid", "comm",
    "local_address", "local_port", "remote_address", "remote_port",
    "bytes_sent", "bytes_received", "duration_seconds", "rtt_seconds", "retransmits",
    "datagrams_sent", "datagrams_received", "cgroup_id", "container_id", "preexisting", "drops", "drop_reason",
)


def json_object(event: ConnectionEvent) -> dict:
    """The event as a JSON-ready dict: numbers stay numbers, a missing RTT (UDP) is null."""
    return {key: getattr(event, key) for key in JSON_KEYS}


def json_line(event: ConnectionEvent) -> str:
    """One line of JSON, no trailing newline."""
    return json.dumps(json_object(event), separators=(",", ":"), ensure_ascii=False)


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
