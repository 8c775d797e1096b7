"""The attach flavours a probe test runs in, with ids the kernel matrix reads and the features each needs."""
import pytest

from gespann.bpf import features


def kprobes():
    """kprobes from either source: the PMU, or tracefs kprobe_events."""
    pmu = features.kprobe_pmu()
    return pmu if pmu.available else features.kprobe_events()


FLAVOURS = [  # (attach mode, perf event link, the features it needs)
    pytest.param("tp_btf", "auto", (features.tp_btf,), id="tp_btf"),
    pytest.param("raw_tracepoint", "auto", (features.raw_tracepoint,), id="raw_tracepoint_open"),
    pytest.param("tracepoint", "link", (features.perf_link,), id="tracepoint-bpf_link"),
    pytest.param("tracepoint", "ioctl", (features.tracepoint,), id="tracepoint-perf_event_ioctl"),
    pytest.param("fentry", "auto", (features.fentry,), id="fentry"),
    pytest.param("kprobe", "link", (kprobes, features.perf_link), id="kprobe-bpf_link"),
    pytest.param("kprobe", "ioctl", (kprobes,), id="kprobe-perf_event_ioctl"),
]
