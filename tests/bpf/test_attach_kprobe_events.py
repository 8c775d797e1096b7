"""Kprobe perf event plumbing without a kernel: the kprobe PMU's sysfs files and tracefs kprobe_events lines.

A fake sysfs or tracefs directory stands in for the kernel, so these run on
any machine, including ones without kprobes.
"""
import errno
import os

import pytest

from gespann.bpf import kprobes
from gespann.bpf.errors import BPFError, SymbolNotFoundError
from gespann.bpf.kprobes import TracefsKprobe


@pytest.fixture
def pmu(tmp_path):
    (tmp_path / "format").mkdir()
    (tmp_path / "type").write_text("6\n")
    (tmp_path / "format" / "retprobe").write_text("config:0\n")
    return tmp_path


def test_pmu_type_and_retprobe_bit_come_from_sysfs(pmu, tmp_path):
    assert kprobes.pmu_type(str(pmu)) == 6 and kprobes.retprobe_bit(str(pmu)) == 0
    assert kprobes.pmu_type(str(tmp_path / "absent")) is None


def test_an_unexpected_retprobe_format_is_an_error(pmu):
    (pmu / "format" / "retprobe").write_text("config1:3\n")
    with pytest.raises(BPFError, match="expected config:<bit>"):
        kprobes.retprobe_bit(str(pmu))


@pytest.fixture
def tracefs(tmp_path):
    (tmp_path / "kprobe_events").write_text("p:kprobes/someone_elses do_sys_open+0\n")
    return tmp_path


def lines(tracefs) -> list[str]:
    return (tracefs / "kprobe_events").read_text().splitlines()


def test_events_are_appended_named_by_pid_and_removed_once(tracefs):
    entry, ret = TracefsKprobe("tcp_connect", offset=4, root=str(tracefs)), TracefsKprobe("inet_csk_accept", True,
                                                                                           root=str(tracefs))
    assert entry.name.startswith(f"gespann_{os.getpid()}_") and entry.name != ret.name
    entry.close()
    entry.close()
    assert lines(tracefs) == ["p:kprobes/someone_elses do_sys_open+0",  # appended, never truncated
                              f"p:kprobes/{entry.name} tcp_connect+4", f"r:kprobes/{ret.name} inet_csk_accept",
                              f"-:kprobes/{entry.name}"]
    assert entry.removed and not ret.removed


def test_the_event_id_is_read_from_its_events_directory(tracefs):
    event = TracefsKprobe("tcp_connect", root=str(tracefs))
    (tracefs / "events" / "kprobes" / event.name).mkdir(parents=True)
    (tracefs / "events" / "kprobes" / event.name / "id").write_text("1234\n")
    assert event.id == 1234


def test_a_function_the_kernel_will_not_probe_is_named_with_error_log(tracefs, monkeypatch):
    (tracefs / "error_log").write_text("[ 1.0] trace_kprobe: error: Failed to register probe event\n"
                                       "  Command: p:kprobes/x nosuch+0\n             ^\n")

    def refuse(self, line):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(TracefsKprobe, "_write", refuse)
    with pytest.raises(SymbolNotFoundError) as missing:
        TracefsKprobe("nosuch", root=str(tracefs))
    assert "kernel function nosuch cannot be probed" in str(missing.value)
    assert "Failed to register probe event" in str(missing.value)


def test_a_busy_event_is_removed_once_the_kernel_lets_go(tracefs, monkeypatch):
    event, attempts = TracefsKprobe("tcp_connect", root=str(tracefs)), []
    write = TracefsKprobe._write

    def busy_twice(self, line):
        attempts.append(line)
        if len(attempts) <= 2:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        write(self, line)

    monkeypatch.setattr(TracefsKprobe, "_write", busy_twice)
    event.close()
    assert len(attempts) == 3 and lines(tracefs)[-1] == attempts[-1] and event.removed
