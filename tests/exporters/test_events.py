"""Connection events as a tcplife-like table and as JSON lines."""

from __future__ import annotations

import json
import math
import time

from exporter_figures import event
from hypothesis import given
from hypothesis import strategies as st

from gespann.collector import ConnectionEvent
from gespann.exporters import json_line, json_object, table_header, table_line
from gespann.exporters.events import JSON_KEYS


def clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def test_header_names_every_column():
    assert table_header().split() == ["TIME", "PID", "COMM", "PROTO", "ROLE", "LOCAL", "REMOTE", "OUTCOME",
                                      "TX_B", "RX_B", "DUR_MS", "RTT_MS"]


def test_a_tcp_close():
    assert table_line(event()).split() == [
        f"{clock(1_700_000_000)}.250", "4242", "curl", "tcp", "client", "10.0.0.1:43210", "93.184.216.34:443",
        "close", "512", "2048", "120.500", "12.345"]


def test_columns_line_up_with_the_header():
    header, line = table_header(), table_line(event(pid=7, bytes_sent=5))
    for title in ("PID", "TX_B", "RTT_MS"):  # right-aligned numbers end where their title ends
        end = header.index(title) + len(title)
        assert line[end - 1] != " " and (end == len(line) or line[end] == " "), title
    for title in ("COMM", "LOCAL", "OUTCOME"):  # text starts where its title starts
        assert line[header.index(title) - 1] == " " and line[header.index(title)] != " ", title


def test_reset_failure_ipv6_and_udp():
    reset = table_line(event(outcome="reset", reason="received", local_address="::1", remote_address="::1"))
    assert "reset/received" in reset.split()
    assert "[::1]:43210" in reset.split() and "[::1]:443" in reset.split()
    failed = table_line(event(outcome="failed", reason="refused", bytes_sent=0, bytes_received=0,
                              duration_seconds=0.0005, rtt_seconds=None))
    assert failed.split()[-5:] == ["failed/refused", "0", "0", "0.500", "-"]
    udp = table_line(event(protocol="udp", rtt_seconds=None, comm="a-very-long-process-name"))
    assert udp.split()[2:4] == ["a-very-long-pro", "udp"], "comm cut to the kernel's 15 characters"


def test_json_line_keys_values_and_types():
    line = json_line(event(rtt_seconds=None, protocol="udp", datagrams_sent=3))
    assert "\n" not in line
    decoded = json.loads(line)
    assert list(decoded) == list(JSON_KEYS)
    assert decoded["timestamp"] == 1_700_000_000.25
    assert decoded["local_port"] == 43210 and decoded["bytes_received"] == 2048
    assert decoded["duration_seconds"] == 0.1205
    assert decoded["rtt_seconds"] is None
    assert decoded["datagrams_sent"] == 3
    assert decoded["comm"] == "curl" and decoded["reason"] == ""


def test_json_keys_cover_every_event_field():
    """A new ConnectionEvent field must be given a JSON key on purpose: the keys are a contract."""
    assert JSON_KEYS == ConnectionEvent._fields, "the same names, in the same order"


def test_json_object_round_trips():
    original = event(comm="nginx: worker", container_id="3f2a")
    assert ConnectionEvent(**json.loads(json_line(original))) == original
    assert json_object(original)["container_id"] == "3f2a"


_text = st.text(st.characters(), max_size=40)  # any code point: quotes, control characters, non-ASCII, surrogates
_count = st.integers(min_value=0, max_value=2**64 - 1)
_seconds = st.floats(allow_nan=True, allow_infinity=True)
_events = st.builds(
    ConnectionEvent, timestamp=_seconds, protocol=_text, role=_text, outcome=_text, reason=_text,
    pid=st.integers(0, 2**32 - 1), comm=_text, local_address=_text, local_port=st.integers(0, 65535),
    remote_address=_text, remote_port=st.integers(0, 65535), bytes_sent=_count, bytes_received=_count,
    duration_seconds=_seconds, rtt_seconds=st.none() | _seconds, retransmits=_count, datagrams_sent=_count,
    datagrams_received=_count, cgroup_id=_count, container_id=_text, preexisting=st.booleans(), drops=_count,
    drop_reason=_text, backend_address=_text, backend_port=st.integers(0, 65535))


@given(_events)
def test_json_line_is_exactly_what_json_dumps_writes(any_event):
    """json_line writes the line field by field, for speed: it must be json.dumps' line, byte for byte."""
    expected = json.dumps(json_object(any_event), separators=(",", ":"), ensure_ascii=False)
    assert json_line(any_event) == expected
    if all(math.isfinite(v) for v in (any_event.timestamp, any_event.duration_seconds)):
        assert list(json.loads(json_line(any_event))) == list(JSON_KEYS)
