"""Feature probes, and what gespann falls back to on kernels that lack a feature."""
import pytest
from kernel_features import kernel_at_least

from gespann.bpf import features
from gespann.bpf.channel import RecordChannel
from gespann.bpf.errors import FeatureUnsupportedError
from gespann.bpf.links import AttachMode, attach_tracepoint
from gespann.bpf.programs import load_program

pytestmark = pytest.mark.root
RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")


def test_probes_agree_with_kernel_history():
    """Every kernel gespann supports (5.10+) has a ring buffer; bpf_link for perf events came in 5.15.
    The probes ask the kernel, so this checks them against the releases (Debian backports neither)."""
    assert features.has_ringbuf()
    assert features.has_perf_link() == kernel_at_least(5, 15)


def test_without_perf_links_tracepoints_attach_by_ioctl(monkeypatch):
    monkeypatch.setattr(features, "has_perf_link", lambda: False)
    with load_program(RETURN_ZERO, name="gt_zero") as prog:
        with attach_tracepoint(prog, "sock", "inet_sock_set_state") as link:
            assert link.mode is AttachMode.PERF_IOCTL
        with pytest.raises(FeatureUnsupportedError) as missing:
            attach_tracepoint(prog, "sock", "inet_sock_set_state", mode=AttachMode.LINK)
    assert "bpf_link for perf events (added in Linux 5.15)" in str(missing.value)


def test_without_ring_buffers_records_go_through_perf(monkeypatch):
    monkeypatch.setattr(features, "has_ringbuf", lambda: False)
    with RecordChannel("gt_events") as channel:
        assert channel.kind == "perf" and list(channel.maps) == ["gt_events"]
