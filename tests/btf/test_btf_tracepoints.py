"""Tracepoint records in BTF (trace_event_raw_<event>) against tracefs's own format files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from gespann.btf import load_vmlinux
from gespann.btf.fieldpath import locate
from gespann.btf.sources import VMLINUX_BTF

TRACEFS = Path("/sys/kernel/tracing")
# (system, event, event class): events declared with a shared DECLARE_EVENT_CLASS use its record.
EVENTS = [
    ("sock", "inet_sock_set_state", "inet_sock_set_state"),
    ("sock", "inet_sk_error_report", "inet_sk_error_report"),
    ("tcp", "tcp_retransmit_skb", "tcp_retransmit_skb"),
    ("tcp", "tcp_send_reset", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset", "tcp_event_sk"),
    ("tcp", "tcp_destroy_sock", "tcp_event_sk"),
]
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);")

pytestmark = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")


@pytest.fixture(scope="module")
def tracefs() -> Path:
    if not (TRACEFS / "events").is_dir():
        if os.geteuid() != 0:
            pytest.skip("tracefs is not mounted and mounting it needs root")
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False)
    if not (TRACEFS / "events").is_dir():
        pytest.skip("tracefs is not available")
    return TRACEFS


def format_fields(path: Path) -> list[tuple[str, int, int]]:
    """(name, offset, size) of an event's own fields (common_* live in the trace_entry header)."""
    fields = []
    for match in _FIELD.finditer(path.read_text()):
        name = re.sub(r"\[.*\]$", "", match["decl"].split()[-1])  # "__u8 saddr[4]" -> "saddr"
        if not name.startswith("common_"):
            fields.append((name.lstrip("*"), int(match["offset"]), int(match["size"])))
    return fields


@pytest.mark.parametrize("system, event, event_class", EVENTS)
def test_trace_event_record_matches_format_file(tracefs, system, event, event_class):
    path = tracefs / "events" / system / event / "format"
    if not path.exists():
        pytest.skip(f"{system}:{event} does not exist on this kernel")
    fields = format_fields(path)
    assert fields, f"no fields parsed from {path}"
    spec = load_vmlinux()
    for name, offset, size in fields:
        loc = locate(spec, f"trace_event_raw_{event_class}", name)
        assert (loc.offset, loc.size) == (offset, size), (event, name)
    header = locate(spec, f"trace_event_raw_{event_class}", "ent")
    assert header.offset == 0 and header.size == min(offset for _, offset, _ in fields)
