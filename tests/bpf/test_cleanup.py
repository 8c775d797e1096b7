"""After the Python objects are closed, nothing gespann loaded stays in the kernel (bpftool as the oracle).

The same suite may run beside this one, with the same names: this test's objects are the ones this
process came to hold descriptors of while it made them, told by id (bpf_objects).
"""
import os

import pytest
from bpf_objects import held_by, loaded, names
from loopback import wait_for
from sock_programs import count_new_states, send_state_changes

from gespann.bpf import maps
from gespann.bpf.channel import RecordChannel
from gespann.bpf.links import AttachMode, attach_tracepoint
from gespann.bpf.programs import load_program

pytestmark = pytest.mark.root


def test_nothing_stays_loaded(loopback, state_format):
    before = held_by(os.getpid())
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
    made = held_by(os.getpid()) - before
    assert names(obj for obj in made if obj[0] == "prog") == {"gt_count", "gt_send_ring", "gt_send_perf"}
    assert names(obj for obj in made if obj[0] == "map") == {"gt_counts", "gt_ring", "gt_ring_lost", "gt_perf"}

    for obj in [*links, count, send_ring, send_perf, counts, ring, perf]:
        obj.close()
    # Programs go at once; the maps they used follow after an RCU grace period.
    wait_for(lambda: not made & loaded())
    assert not made & loaded()
