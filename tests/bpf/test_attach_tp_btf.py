"""BTF tracepoints (tp_btf) on inet_sock_set_state, attached both ways, counting every transition exactly."""
import pytest
from attach_programs import CONNECTIONS, count_transitions_on_port, leaves_nothing_behind, require
from loopback import CLOSE, wait_for

from gespann import btf
from gespann.bpf import features, maps
from gespann.bpf.links import AttachMode, attach_tp_btf
from gespann.bpf.programs import load_program
from gespann.bpf.syscall import AttachType, ProgType

pytestmark = [pytest.mark.root, pytest.mark.usefixtures(leaves_nothing_behind.__name__)]

MODES = [pytest.param(mode, id=mode.value) for mode in (AttachMode.LINK, AttachMode.RAW_TRACEPOINT)]


@pytest.mark.parametrize("mode", MODES)
def test_tp_btf_counts_every_transition(mode, loopback):
    """The arguments are (sk, oldstate, newstate); a tp_btf program needs no trampoline."""
    require(features.tp_btf(), *([features.tracing_link()] if mode is AttachMode.LINK else []))
    expected = loopback.expected_counts(CONNECTIONS)
    typedef = btf.kernel_types().tracepoint_id("inet_sock_set_state")
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_transitions_on_port("gt_tp_btf", loopback.port), ProgType.TRACING,
                         maps={"counts": counts}, expected_attach_type=AttachType.TRACE_RAW_TP,
                         attach_btf_id=typedef) as prog:
        with attach_tp_btf(prog, mode=mode) as link:
            assert link.mode is mode
            loopback.run(CONNECTIONS)
            loopback.close()
            wait_for(lambda: counts[CLOSE] == expected[CLOSE])
        assert {state: n for state, n in counts.items() if n} == expected
