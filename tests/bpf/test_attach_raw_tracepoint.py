"""Raw tracepoints on inet_sock_set_state, counting every transition of the test's connections exactly."""
import pytest
from attach_programs import CONNECTIONS, count_transitions_on_port, leaves_nothing_behind, require
from loopback import CLOSE, wait_for

from gespann.bpf import features, maps
from gespann.bpf.links import AttachMode, attach_raw_tracepoint
from gespann.bpf.programs import load_program
from gespann.bpf.syscall import ProgType

pytestmark = [pytest.mark.root, pytest.mark.usefixtures(leaves_nothing_behind.__name__)]


def test_raw_tracepoint_counts_every_transition(loopback):
    """The raw arguments are (sk, oldstate, newstate) as u64s; the socket is read with probe_read_kernel."""
    require(features.raw_tracepoint())
    expected = loopback.expected_counts(CONNECTIONS)
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_transitions_on_port("gt_raw_tp", loopback.port), ProgType.RAW_TRACEPOINT,
                         maps={"counts": counts}) as prog:
        with attach_raw_tracepoint(prog, "inet_sock_set_state") as link:
            assert link.mode is AttachMode.RAW_TRACEPOINT
            loopback.run(CONNECTIONS)
            loopback.close()
            wait_for(lambda: counts[CLOSE] == expected[CLOSE])
        assert {state: n for state, n in counts.items() if n} == expected
