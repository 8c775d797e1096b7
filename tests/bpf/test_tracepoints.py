"""Attaching DSL-written programs to sock:inet_sock_set_state and counting exact transitions."""
import os

import pytest
from kernel_features import require
from loopback import wait_for
from sock_programs import count, count_new_states

from asm import R10, Program, W
from gespann.bpf import features, maps
from gespann.bpf.errors import TracepointNotFoundError
from gespann.bpf.links import AttachMode, attach_raw_tracepoint, attach_tracepoint
from gespann.bpf.programs import enable_run_stats, load_program
from gespann.bpf.syscall import ProgType

pytestmark = pytest.mark.root
CONNECTIONS = 5


@pytest.mark.parametrize("mode", [AttachMode.LINK, AttachMode.PERF_IOCTL])
def test_counts_every_transition_of_the_test_port(mode, loopback, state_format):
    if mode is AttachMode.LINK:
        require(features.perf_link())
    expected = loopback.expected_counts(CONNECTIONS)
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_new_states(state_format, loopback.port), maps={"counts": counts}) as prog:
        with attach_tracepoint(prog, "sock", "inet_sock_set_state", mode=mode) as link:
            assert link.mode is mode
            loopback.run(CONNECTIONS)
            loopback.close()
            wait_for(lambda: counts[7] == expected[7])
        observed = {state: n for state, n in counts.items() if n}
        assert observed == expected
        assert prog.info().map_ids == (counts.info().id,)


def test_run_statistics(loopback, state_format):
    """With statistics on, the kernel counts every run: at least one per transition counted."""
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_new_states(state_format, loopback.port), maps={"counts": counts}) as prog:
        with enable_run_stats(), attach_tracepoint(prog, "sock", "inet_sock_set_state"):
            loopback.run(2)
        info = prog.info()
        assert info.run_cnt >= sum(counts.values()) == 21 and info.run_time_ns > 0


def test_detached_program_counts_nothing(loopback, state_format):
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_new_states(state_format, loopback.port), maps={"counts": counts}) as prog:
        attach_tracepoint(prog, "sock", "inet_sock_set_state").close()
        loopback.run(1)
        assert sum(counts.values()) == 0


def test_default_mode_is_a_link_where_the_kernel_has_one():
    expected = AttachMode.LINK if features.has_perf_link() else AttachMode.PERF_IOCTL
    with _return_zero(ProgType.TRACEPOINT) as prog, attach_tracepoint(prog, "sock", "inet_sock_set_state") as link:
        assert link.mode is expected


def test_missing_tracepoint_names_it_and_the_kernel():
    with _return_zero(ProgType.TRACEPOINT) as prog, pytest.raises(TracepointNotFoundError) as missing:
        attach_tracepoint(prog, "sock", "no_such_tracepoint")
    assert "sock:no_such_tracepoint" in str(missing.value)
    assert os.uname().release in str(missing.value)


def test_raw_tracepoint_fires(loopback):
    """A raw tracepoint sees every socket's transitions (it has no port filter): at least ours."""
    p = Program("gt_raw_count")
    key = p.frame.alloc("key", size=4)
    p.st(W, R10, key.at(), 0)
    count(p, "counts", key, "out")
    with maps.ArrayMap(maps.U64, 1, name="gt_raw_counts") as counts, \
            load_program(p, ProgType.RAW_TRACEPOINT, maps={"counts": counts}) as prog:
        with attach_raw_tracepoint(prog, "inet_sock_set_state") as link:
            assert link.mode is AttachMode.RAW_TRACEPOINT
            loopback.run(1)
        assert counts[0] >= 11  # listen, then ten transitions of one connection
        with pytest.raises(TracepointNotFoundError):
            attach_raw_tracepoint(prog, "no_such_tracepoint")


def _return_zero(prog_type):
    return load_program(bytes.fromhex("b700000000000000" "9500000000000000"), prog_type, name="gt_zero")
