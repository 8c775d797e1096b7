"""kprobes and kretprobes, made by the kprobe PMU and in tracefs kprobe_events, counting exact calls.

Each path is forced (`source`, `mode`), so every one the kernel offers is
tested; one it lacks skips as n/a with the feature probe's reason.
"""
import pytest
from attach_programs import CONNECTIONS, count_sockets_on_port, leaves_nothing_behind, our_kprobe_events, require

from asm import R1, R6
from gespann.bpf import features, maps
from gespann.bpf.errors import FeatureUnsupportedError, SymbolNotFoundError
from gespann.bpf.links import AttachMode, KprobeSource, attach_kprobe
from gespann.bpf.programs import load_program
from gespann.bpf.syscall import ProgType
from gespann.probes.toolkit.arguments import emit_load_arg, emit_load_return

pytestmark = [pytest.mark.root, pytest.mark.usefixtures(leaves_nothing_behind.__name__)]

PATHS = [pytest.param(source, mode, id=f"{source.value}-{mode.value}")
         for source in KprobeSource for mode in (AttachMode.LINK, AttachMode.PERF_IOCTL)]


def require_path(source: KprobeSource, mode: AttachMode) -> None:
    require(features.kprobe_pmu() if source is KprobeSource.PMU else features.kprobe_events())
    if mode is AttachMode.LINK:
        require(features.perf_link())


def count_calls(program, symbol, retprobe, source, mode, loopback) -> int:
    """Attach, make CONNECTIONS connections, detach, make one more (uncounted): the count."""
    with maps.ArrayMap(maps.U64, 1, name="gt_counts") as counts, \
            load_program(program, ProgType.KPROBE, maps={"counts": counts}) as prog:
        with attach_kprobe(prog, symbol, retprobe, source=source, mode=mode) as link:
            assert (link.source, link.mode) == (source, mode)
            assert len(our_kprobe_events()) == (source is KprobeSource.TRACEFS)
            loopback.run(CONNECTIONS)
        loopback.run(1)
        return counts[0]


@pytest.mark.parametrize("source, mode", PATHS)
def test_kprobe_counts_tcp_connect(source, mode, loopback):
    """tcp_connect(sk) runs once per connection the client side opens; sk is its first argument."""
    require_path(source, mode)
    program = count_sockets_on_port("gt_kprobe", lambda p: emit_load_arg(p, R6, R1, 0), loopback.port)
    assert count_calls(program, "tcp_connect", False, source, mode, loopback) == CONNECTIONS


@pytest.mark.parametrize("source, mode", PATHS)
def test_kretprobe_counts_inet_csk_accept(source, mode, loopback):
    """inet_csk_accept returns the accepted socket once per connection; a kretprobe reads it in ax."""
    require_path(source, mode)
    program = count_sockets_on_port("gt_kretprobe", lambda p: emit_load_return(p, R6, R1), loopback.port)
    assert count_calls(program, "inet_csk_accept", True, source, mode, loopback) == CONNECTIONS


@pytest.mark.parametrize("source", list(KprobeSource), ids=[s.value for s in KprobeSource])
def test_kprobe_on_an_unknown_function_names_it(source):
    require(features.kprobe_pmu() if source is KprobeSource.PMU else features.kprobe_events())
    with _return_zero(ProgType.KPROBE) as prog, pytest.raises(SymbolNotFoundError) as missing:
        attach_kprobe(prog, "gespann_no_such_function", source=source)
    assert "gespann_no_such_function" in str(missing.value)


def test_kprobe_default_path_is_the_newest():
    require(features.kprobe_pmu())
    with _return_zero(ProgType.KPROBE) as prog, attach_kprobe(prog, "tcp_connect") as link:
        assert link.source is KprobeSource.PMU
        assert link.mode is (AttachMode.LINK if features.has_perf_link() else AttachMode.PERF_IOCTL)


def test_missing_kprobes_are_reported_as_unsupported():
    """Without the PMU and kprobe_events, attaching says so, with both reasons; forcing either says why."""
    pmu, events = features.kprobe_pmu(), features.kprobe_events()
    if pmu.available or events.available:
        pytest.skip("this kernel has kprobes")
    with _return_zero(ProgType.KPROBE) as prog:
        with pytest.raises(FeatureUnsupportedError) as missing:
            attach_kprobe(prog, "tcp_connect")
        assert "does not support kprobes" in str(missing.value)
        assert pmu.detail in str(missing.value) and events.detail in str(missing.value)
        with pytest.raises(FeatureUnsupportedError, match="kprobe PMU"):
            attach_kprobe(prog, "tcp_connect", source=KprobeSource.PMU)
        with pytest.raises(FeatureUnsupportedError, match="kprobe_events"):
            attach_kprobe(prog, "tcp_connect", source=KprobeSource.TRACEFS)


def test_attach_kprobe_takes_kprobe_programs_only():
    with _return_zero(ProgType.TRACEPOINT) as prog, pytest.raises(ValueError, match="KPROBE"):
        attach_kprobe(prog, "tcp_connect")
    with _return_zero(ProgType.KPROBE) as prog, pytest.raises(ValueError, match="offset"):
        attach_kprobe(prog, "tcp_connect", retprobe=True, offset=4)


def _return_zero(prog_type):
    return load_program(bytes.fromhex("b700000000000000" "9500000000000000"), prog_type, name="gt_zero")
