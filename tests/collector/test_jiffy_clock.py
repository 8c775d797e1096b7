"""The kernel's HZ, as the idle count needs it: from the kernel's config, or measured from two walks."""
import pytest

from gespann.probes.tcp import metrics as tcp
from gespann.probes.tcp.metrics import JiffyClock
from gespann.probes.tcp.walk import WalkTotals


def reading(jiffies: int, ktime_ns: int) -> WalkTotals:
    return WalkTotals(open=0, idle=0, jiffies=jiffies, ktime_ns=ktime_ns)


@pytest.mark.parametrize("hz", JiffyClock.CHOICES)
def test_hz_is_measured_as_the_nearest_configurable_value(monkeypatch, hz):
    monkeypatch.setattr(tcp, "configured_hz", lambda: None)
    start = 7_000_000_000
    clock = JiffyClock(reading(4_294_000_000, start))
    assert clock.hz is None
    too_soon = start + JiffyClock.MIN_SPAN_NS - 1
    assert clock.measure(reading(4_294_000_000 + hz // 20, too_soon)) is None  # 50 ms: not yet
    span_ns = JiffyClock.MIN_SPAN_NS
    # the worst case: a jiffy short of the span's worth, as a reading taken just before a tick gives
    ticks = hz * span_ns // 1_000_000_000 - 1
    assert clock.measure(reading(4_294_000_000 + ticks, start + span_ns)) == hz


def test_the_kernels_config_is_taken_when_it_can_be_read(monkeypatch):
    monkeypatch.setattr(tcp, "configured_hz", lambda: 300)
    assert JiffyClock(reading(1, 1)).hz == 300
