"""The feature report `gespann check` prints: each probe against what the kernel shows otherwise.

Debian's kernels do not backport BPF features, so for them (and this
machine's kernel) the release that added a feature is an independent oracle
of the probes, which never look at versions themselves.
"""
import dataclasses
import json
import os
import re

import pytest

from gespann.bpf import features, kprobes
from gespann.bpf.errors import PermissionDeniedError
from gespann.bpf.syscall import ProgType

pytestmark = pytest.mark.root

#: Features whose presence follows from the release alone, on the kernels gespann is tested on.
BY_RELEASE = ["tracepoint", "perf_link", "raw_tracepoint", "tp_btf", "tracing_link", "ringbuf",
              *(f"helper:{name}" for name in features.HELPERS_SINCE)]


def release_at_least(since: str) -> bool:
    running = tuple(int(n) for n in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    return running >= tuple(int(n) for n in since.split(".")[:2])


@pytest.fixture(scope="module")
def report():
    return {status.name: status for status in features.report()}


def test_report_names_each_feature_once_with_its_release_and_a_reason(report):
    assert len(report) == len(features.report())
    for status in report.values():
        assert re.fullmatch(r"\d+\.\d+", status.since), status
        assert status.detail and status.description
    assert json.loads(json.dumps([dataclasses.asdict(s) for s in report.values()]))  # what `gespann check --json` needs


@pytest.mark.parametrize("name", BY_RELEASE)
def test_probe_agrees_with_the_release(name, report):
    status = report[name]
    expected = release_at_least(status.since)
    if name in ("tp_btf", "tracing_link"):  # these also need kernel BTF
        expected = expected and features.has_btf()
    assert status.available is expected, status


def test_kprobe_probes_agree_with_sysfs_and_tracefs(report):
    pmu, events = report["kprobe_pmu"], report["kprobe_events"]
    assert pmu.available is os.path.exists(f"{kprobes.PMU_DIR}/type")
    assert events.available is os.path.exists(kprobes.kprobe_events_path())
    if not pmu.available:
        assert kprobes.PMU_DIR in pmu.detail
    if not events.available:
        assert "kprobe_events" in events.detail


def test_btf_probe_agrees_with_sysfs(report):
    assert report["btf"].available is os.path.exists("/sys/kernel/btf/vmlinux")


def test_unavailable_fentry_says_what_was_refused(report):
    """This machine's kernel refuses trampolines with EPERM to a process holding every capability."""
    status = report["fentry"]
    if status.available:
        pytest.skip("this kernel has fentry")
    assert features.FENTRY_PROBE_FUNC in status.detail
    assert "lacks" not in status.detail
    assert str(status.error()).startswith(f"kernel {os.uname().release} does not support fentry/fexit")


def test_probes_are_memoized():
    assert features.fentry() is features.fentry() and features.kprobe_pmu() is features.kprobe_pmu()
    assert features.helper("probe_read_kernel") is features.helper("probe_read_kernel")


def test_a_helper_the_program_type_may_not_call_is_missing(monkeypatch):
    monkeypatch.setitem(features.HELPERS_SINCE, "skb_store_bytes", "4.4")  # a socket buffer helper
    status = features.helper("skb_store_bytes", ProgType.KPROBE)
    assert not status.available and "KPROBE" in status.detail
    with pytest.raises(ValueError, match="HELPERS_SINCE"):
        features.helper("get_socket_cookie")


def test_a_probe_that_cannot_run_is_reported_not_raised(monkeypatch):
    def refused():
        raise PermissionDeniedError("bpf(BPF_PROG_LOAD)", ("CAP_BPF",), 1, held=set())

    monkeypatch.setattr(features, "ringbuf", refused)
    status = {s.name: s for s in features.report()}["ringbuf"]
    assert not status.available and status.detail.startswith("could not probe: ") and "lacks CAP_BPF" in status.detail
