"""The bench's readings of what the kernel accounts: /proc figures, bpftool's JSON, the load generator's line."""
import shutil
import subprocess

import pytest
from bench import bpfstats, loadgen, procfs

STAT = ("4242 (my (odd) comm) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 12345 "
        "123456789 2000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0")


def test_stat_gives_user_and_system_seconds_even_with_parentheses_in_the_name():
    assert procfs.parse_stat(STAT, ticks_per_second=100) == (2.5, 0.75)


def test_peak_rss_is_vmhwm_in_bytes():
    status = "Name:\tgespann\nVmPeak:\t  300000 kB\nVmHWM:\t   60012 kB\nVmRSS:\t   58000 kB\n"
    assert procfs.parse_peak_rss(status) == 60012 * 1024
    with pytest.raises(ValueError, match="VmHWM"):
        procfs.parse_peak_rss("Name:\tx\n")


def test_cpu_between_counts_new_threads_whole_and_falls_back_to_ticks_when_one_ended():
    before = procfs.CpuSample({1: 1_000_000_000, 2: 500_000_000}, total_s=1.5)
    grown = procfs.CpuSample({1: 1_200_000_000, 2: 500_000_000, 3: 50_000_000}, total_s=1.76)
    assert procfs.cpu_between(before, grown) == pytest.approx(0.25)
    ended = procfs.CpuSample({1: 1_200_000_000}, total_s=1.8)
    assert procfs.cpu_between(before, ended) == pytest.approx(0.3)
    assert procfs.parse_schedstat("104215 128381 3\n") == 104215


def test_usage_of_this_process_is_plausible():
    import os

    usage = procfs.usage(os.getpid())
    assert usage.cpu_s > 0 and usage.peak_rss_bytes > 1 << 20
    with pytest.raises(ProcessLookupError):
        procfs.usage(2 ** 22 + 1)  # above pid_max's default ceiling: never a live process


PERF_SHOW = [
    {"pid": 10, "fd": 7, "prog_id": 41, "fd_type": "raw_tracepoint", "tracepoint": "inet_sock_set_state"},
    {"pid": 10, "fd": 9, "prog_id": 42, "fd_type": "raw_tracepoint", "tracepoint": "tcp_send_reset"},
    {"pid": 11, "fd": 13, "prog_id": 50, "fd_type": "tracepoint", "tracepoint": "inet_sock_set_state"},
    {"pid": 11, "fd": 14, "prog_id": 51, "fd_type": "kprobe", "func": "tcp_v4_connect", "offset": 0},
]
PROG_SHOW = [
    {"id": 41, "type": "tracing", "name": "gsp_tcp_lifecyc", "run_time_ns": 3_000_000, "run_cnt": 10_000},
    {"id": 42, "type": "tracing", "name": "gsp_tcp_reset_s"},
    {"id": 50, "type": "tracepoint", "name": "inet_sock_set_s", "run_time_ns": 5_000_000, "run_cnt": 10_000},
]


def test_programs_are_found_by_owner_and_named_by_tracepoint():
    assert bpfstats.attachments(PERF_SHOW, 10) == {41: "inet_sock_set_state", 42: "tcp_send_reset"}
    assert bpfstats.attachments(PERF_SHOW, 11) == {50: "inet_sock_set_state"}  # the kprobe has no tracepoint
    runs = bpfstats.program_runs(PROG_SHOW, bpfstats.attachments(PERF_SHOW, 10))
    assert runs == [bpfstats.ProgramRuns(41, "inet_sock_set_state", 10_000, 3_000_000, "gsp_tcp_lifecyc"),
                    bpfstats.ProgramRuns(42, "tcp_send_reset", 0, 0, "gsp_tcp_reset_s")]


def test_costs_are_differences_added_up_per_tracepoint():
    before = [bpfstats.ProgramRuns(1, "a", 100, 10_000), bpfstats.ProgramRuns(2, "a", 0, 0)]
    after = [bpfstats.ProgramRuns(1, "a", 300, 50_000), bpfstats.ProgramRuns(2, "a", 100, 20_000),
             bpfstats.ProgramRuns(3, "b", 0, 0)]
    costs = bpfstats.costs(before, after)
    assert costs["a"] == bpfstats.Cost("a", 300, 60_000) and costs["a"].ns_per_run == 200
    assert costs["b"].ns_per_run is None


def test_loadgen_line_is_read_and_garbage_is_a_clear_error():
    line = ('{"connections": 30000, "errors": 0, "seconds": 1.5, "per_second": 20000.0, "cpu_s": 2.25, '
            '"threads": 2, "size": 64}\n')
    result = loadgen.parse("noise\n" + line)
    assert (result.connections, result.per_second, result.threads) == (30000, 20000.0, 2)
    assert result.cpu_us_per_connection == pytest.approx(75)
    with pytest.raises(loadgen.LoadError, match="unreadable loadgen output"):
        loadgen.parse("Segmentation fault")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (tools/setup-host.sh bench)")
def test_loadgen_builds_with_gcc_and_refuses_bad_usage(tmp_path):
    binary = loadgen.build(tmp_path / "loadgen")
    for argv in ([], ["0", "5"], ["10", "5", "65"], ["10", "-1"]):
        done = subprocess.run([str(binary), *argv], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and done.stderr.startswith("usage: loadgen"), argv
    assert loadgen.build(tmp_path / "loadgen") == binary  # up to date: not rebuilt
