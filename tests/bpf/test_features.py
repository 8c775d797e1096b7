"""Feature probes, and what gespann falls back to on kernels that lack a feature."""
import pytest

from gespann.bpf import features
from gespann.bpf.channel import EventChannel
from gespann.bpf.errors import FeatureUnsupportedError
from gespann.bpf.links import AttachMode, attach_tracepoint
from gespann.bpf.programs import load_program

pytestmark = pytest.mark.root
RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")


def test_answers_match_the_feature_report():
    """The booleans the attach code uses say what the report says (5.10 has a ring buffer, no perf link)."""
    report = {status.name: status.available for status in features.report()}
    assert (features.has_ringbuf(), features.has_perf_link()) == (report["ringbuf"], report["perf_link"])


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
    with EventChannel("gt_events") as channel:
        assert channel.kind == "perf" and list(channel.maps) == ["gt_events"]
