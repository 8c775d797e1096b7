"""fentry and fexit, attached with BPF_LINK_CREATE and with BPF_RAW_TRACEPOINT_OPEN, counting exact calls.

Targets come from the running kernel's BTF: a function's id, and for fexit
its parameter count, which says where the return value sits.
"""
import pytest
from attach_programs import CONNECTIONS, count_sockets_on_port, leaves_nothing_behind, require, u64_argument

from gespann import btf
from gespann.bpf import features, maps
from gespann.bpf.errors import FeatureUnsupportedError
from gespann.bpf.links import AttachMode, attach_fentry, attach_fexit
from gespann.bpf.programs import load_program
from gespann.bpf.syscall import AttachType, ProgType

pytestmark = [pytest.mark.root, pytest.mark.usefixtures(leaves_nothing_behind.__name__)]

MODES = [pytest.param(mode, id=mode.value) for mode in (AttachMode.LINK, AttachMode.RAW_TRACEPOINT)]


def require_mode(mode: AttachMode) -> None:
    require(features.fentry(), *([features.tracing_link()] if mode is AttachMode.LINK else []))


def count_calls(program, attach_type, function, attach, mode, loopback) -> int:
    """Attach, make CONNECTIONS connections, detach, make one more (uncounted): the count."""
    with maps.ArrayMap(maps.U64, 1, name="gt_counts") as counts, \
            load_program(program, ProgType.TRACING, maps={"counts": counts}, expected_attach_type=attach_type,
                         attach_btf_id=btf.func_signature(function).btf_id) as prog:
        with attach(prog, mode=mode) as link:
            assert link.mode is mode
            loopback.run(CONNECTIONS)
        loopback.run(1)
        return counts[0]


@pytest.mark.parametrize("mode", MODES)
def test_fentry_counts_tcp_connect(mode, loopback):
    """tcp_connect(sk) runs once per connection the client side opens."""
    require_mode(mode)
    program = count_sockets_on_port("gt_fentry", u64_argument(0), loopback.port)
    assert count_calls(program, AttachType.TRACE_FENTRY, "tcp_connect", attach_fentry, mode, loopback) == CONNECTIONS


@pytest.mark.parametrize("mode", MODES)
def test_fexit_counts_inet_csk_accept(mode, loopback):
    """inet_csk_accept returns the accepted socket, after its arguments (two since 6.10, four before)."""
    require_mode(mode)
    returned = u64_argument(len(btf.func_signature("inet_csk_accept").params))
    program = count_sockets_on_port("gt_fexit", returned, loopback.port)
    assert count_calls(program, AttachType.TRACE_FEXIT, "inet_csk_accept", attach_fexit, mode,
                       loopback) == CONNECTIONS


def test_unavailable_fentry_is_reported_as_unsupported():
    """Where the kernel rules fentry out, loading (or attaching) one says so: the feature and the
    kernel, not a capability to grant, since the process has them all."""
    status = features.fentry()
    if status.available:
        pytest.skip("this kernel has fentry")
    with pytest.raises(FeatureUnsupportedError) as refused:
        with load_program(bytes.fromhex("b700000000000000" "9500000000000000"), ProgType.TRACING, name="gt_fentry",
                          expected_attach_type=AttachType.TRACE_FENTRY,
                          attach_btf_id=btf.func_signature("tcp_connect").btf_id) as prog:
            attach_fentry(prog).close()
    message = str(refused.value)
    assert "does not support fentry/fexit (BPF trampolines) (added in Linux 5.5)" in message
    assert "lacks" not in message and "every capability it needs" in message


def test_attach_fexit_takes_fexit_programs_only():
    with load_program(bytes.fromhex("b700000000000000" "9500000000000000"), ProgType.KPROBE, name="gt_zero") as prog:
        with pytest.raises(ValueError, match="TRACING with expected_attach_type TRACE_FEXIT"):
            attach_fexit(prog)
