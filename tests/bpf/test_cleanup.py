"""After the Python objects are closed, nothing gespann loaded stays in the kernel (bpftool as the oracle)."""
import json
import subprocess

import pytest
from loopback import wait_for
from sock_programs import count_new_states, send_state_changes

from gespann.bpf import maps
from gespann.bpf.channel import RecordChannel
from gespann.bpf.links import AttachMode, attach_tracepoint
from gespann.bpf.programs import load_program

pytestmark = pytest.mark.root
BPFTOOL = "/usr/sbin/bpftool"


def ours(kind: str) -> set[str]:
    """Names of the loaded programs or maps made by these tests (prefix gt_)."""
    listing = json.loads(subprocess.run([BPFTOOL, "-j", kind, "list"], check=True, capture_output=True,
                                        text=True).stdout or "[]")
    return {entry["name"] for entry in listing if entry.get("name", "").startswith("gt_")}


def test_nothing_stays_loaded(loopback, state_format):
    assert ours("prog") == set() and ours("map") == set(), "left over from an earlier run"
    counts = maps.ArrayMap(maps.U64, 16, name="gt_counts")
    ring, perf = RecordChannel("gt_ring"), RecordChannel("gt_perf", force_perf=True)
    count = load_program(count_new_states(state_format, loopback.port), maps={"counts": counts})
    send_ring = load_program(send_state_changes(state_format, loopback.port, ring, name="gt_send_ring"),
                             maps=ring.maps)
    send_perf = load_program(send_state_changes(state_format, loopback.port, perf, name="gt_send_perf"),
                             maps=perf.maps)
    links = [attach_tracepoint(count, "sock", "inet_sock_set_state"),  # a link where the kernel has one
             attach_tracepoint(send_ring, "sock", "inet_sock_set_state", AttachMode.PERF_IOCTL),
             attach_tracepoint(send_perf, "sock", "inet_sock_set_state")]
    loopback.run(1)
    assert len(ring.reader.read(100)) == len(perf.reader.read(100)) == 11
    assert ours("prog") == {"gt_count", "gt_send_ring", "gt_send_perf"}
    assert ours("map") == {"gt_counts", "gt_ring", "gt_ring_lost", "gt_perf"}

    for obj in [*links, count, send_ring, send_perf, counts, ring, perf]:
        obj.close()
    # Programs go at once; the maps they used follow after an RCU grace period.
    wait_for(lambda: not ours("prog") and not ours("map"))
    assert ours("prog") == set() and ours("map") == set()
