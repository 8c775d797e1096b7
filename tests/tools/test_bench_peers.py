"""The libbpf-tools section: reading tcplife's and tcpstates' output and stderr, the IRQ-work count,
and the section's figures, worst-run losses and verdicts."""
from pathlib import Path

import pytest
from bench import libbpf_tools, loadgen, peer_report, procfs, runs
from bench.peers import GESPANN, GESPANN_TRACE, NONE, READER_STOPPED, READER_STOPPED_ROOM, TCPLIFE, TCPSTATES

TCPLIFE_OUT = """PID     COMM             LADDR           LPORT RADDR           RPORT TX_KB  RX_KB  MS
812     loadgen          127.0.0.1       40000 127.0.0.1       51000 0.06   0.06   0.05
812     loadgen          127.0.0.1       51000 127.0.0.1       40000 0.06   0.06   0.05
77      web server       127.0.0.1       8080  127.0.0.1       40000 0.10   0.20   3.00
77      python           10.0.0.2        40000 10.0.0.9        443   0.10   0.20   3.00
"""
TCPSTATES_OUT = ("SKADDR           PID     COMM       LADDR           LPORT RADDR           RPORT OLDSTATE    -> "
                 "NEWSTATE    MS\n") + """\
ffff88814ab89bc0 17689   loadgen    127.0.0.1       40000 0.0.0.0         0     CLOSE       -> LISTEN      0.000
ffff88819bf0ef00 17689   loadgen    127.0.0.1       0     127.0.0.1       40000 CLOSE       -> SYN_SENT    0.000
ffff88819bf0ef00 17689   loadgen    127.0.0.1       60276 127.0.0.1       40000 SYN_SENT    -> ESTABLISHED 0.078
"""


def test_lines_of_the_load_generators_connections_are_told_from_the_hosts(tmp_path: Path):
    out = tmp_path / "tcplife.out"
    out.write_text(TCPLIFE_OUT)
    # the third line names the port as a peer's, between loopback addresses: another program's connection to
    # the same port number is counted as ours, which only overstates what a tool printed of ours
    assert libbpf_tools.count_lines(out, "PID", 40000) == libbpf_tools.Lines(events=4, ours=3)
    out.write_text(TCPSTATES_OUT)
    # the listening socket (no peer: 0.0.0.0) is not a connection
    assert libbpf_tools.count_lines(out, "SKADDR", 40000) == libbpf_tools.Lines(events=3, ours=2)


def test_endpoints_skip_a_comm_with_blanks():
    assert libbpf_tools.endpoints("77 web server 127.0.0.1 8080 ::1 40000 0.1 0.2 3.0") == [
        ("127.0.0.1", "8080"), ("::1", "40000")]


def test_lost_events_and_helper_calls():
    assert libbpf_tools.lost_events("lost 3423 events on CPU #0\nlost 1 event on CPU #1\n") == 3424
    assert libbpf_tools.lost_events("") == 0
    xlated = """  23: (85) call bpf_probe_read_kernel#-71216
  88: (85) call htab_map_update_elem#356272
 102: (85) call bpf_probe_read_kernel#-71216
 269: (85) call bpf_perf_event_output_tp#-61744"""
    assert libbpf_tools.helper_calls(xlated) == {"bpf_probe_read_kernel": 2, "htab_map_update_elem": 1,
                                                 "bpf_perf_event_output_tp": 1}


def test_irq_work_interrupts_are_added_up_over_cpus():
    text = ("           CPU0       CPU1\n LOC:    5230045    5764420   Local timer interrupts\n"
            " IWI:      51361      50235   IRQ work interrupts\n")
    assert procfs.irq_work_interrupts(text) == 101596
    assert procfs.irq_work_interrupts("CPU0\n") == 0


def test_a_readers_wakeups_are_its_voluntary_context_switches():
    assert procfs.parse_voluntary_switches("Name:\ttcplife\nvoluntary_ctxt_switches:\t812\n"
                                           "nonvoluntary_ctxt_switches:\t3\n") == 812
    import os

    assert procfs.voluntary_switches(os.getpid()) > 0


def test_loadgen_line_names_its_port_and_older_lines_still_read():
    line = ('{"connections": 10, "errors": 0, "seconds": 1.0, "per_second": 10.0, "cpu_s": 0.1, "threads": 2, '
            '"size": 64, "port": 40591, "rate": 10.0, "udp": 1}')
    assert loadgen.parse(line).port == 40591
    assert loadgen.parse(line.replace(', "port": 40591', "")).port == 0


def test_rounds_rotate_every_tracer_through_every_position():
    order = ["a", "b", "c", "d"]
    assert [runs.rotated(order, i)[0] for i in range(5)] == ["a", "b", "c", "d", "a"]


def _tool(rate, lost=0, said=0, cpu=0.05, events=6000, ns=3000, irq=6000):
    return {"rate": rate, "connections": 3000, "startup_wall_s": 0.03, "startup_cpu_s": 0.01,
            "peak_rss_bytes": 13 * 2 ** 20, "lost": lost, "reported_lost": said, "cpu_drained_s": cpu,
            "events": events, "all_events": events, "irq_work": irq,
            "per_tracepoint": {"inet_sock_set_state": {"runs": 30000, "run_time_ns": ns * 30000}}}


def _gespann(rate, rss_mib=30, ns=300):
    return {"rate": rate, "connections": 3000, "startup_wall_s": 0.5, "startup_cpu_s": 0.5,
            "peak_rss_bytes": rss_mib * 2 ** 20,
            "per_tracepoint": {"inet_sock_set_state": {"runs": 30000, "run_time_ns": ns * 30000}}}


PEERS = {
    "rate": 2000, "udp_per_connection": 1,
    "rounds": [{NONE: {"rate": 10000}, GESPANN: _gespann(9900), TCPLIFE: _tool(6000), TCPSTATES: _tool(4000)},
               {NONE: {"rate": 20000}, GESPANN: _gespann(19800), TCPLIFE: _tool(12000, lost=5, said=5),
                TCPSTATES: _tool(8000)}],
    "udp_rounds": [{NONE: {"rate": 10000}, GESPANN: _gespann(9700)}, {NONE: {"rate": 10000}, GESPANN: _gespann(9900)}],
    "kernel_cost": [{GESPANN: _gespann(9000, ns=300), GESPANN_TRACE: {**_tool(9000, ns=420), "reported_lost": None},
                     TCPLIFE: _tool(6000, ns=3000), TCPSTATES: _tool(4000, ns=9000),
                     TCPLIFE + READER_STOPPED: _tool(6000, ns=750), TCPSTATES + READER_STOPPED: _tool(6000, ns=700),
                     TCPLIFE + READER_STOPPED_ROOM: _tool(6000, ns=2500),
                     TCPSTATES + READER_STOPPED_ROOM: _tool(6000, ns=8000)}],
    "fixed_rate": [{GESPANN_TRACE: _tool(2000, cpu=0.45, events=20000, irq=10000),
                    TCPLIFE: _tool(2000, cpu=0.16, events=20000, irq=20000),
                    TCPSTATES: _tool(2000, cpu=0.8, events=100000, irq=100000)}],
    "programs": {TCPLIFE: {"inet_sock_set_state": {"type": "tracepoint", "xlated_bytes": 2256,
                                                   "helper_calls": {"bpf_probe_read_kernel": 19},
                                                   "maps": ["birth: hash", "events: perf_event_array"]}}},
}
TRACE = {"available": True, "runs": [{"lost": 0, "reported_lost": None}, {"lost": 12, "reported_lost": None}]}


def test_losses_are_the_worst_runs():
    assert peer_report.worst_loss(PEERS, TRACE, TCPLIFE) == (5, 3, 5)
    assert peer_report.worst_loss(PEERS, TRACE, GESPANN_TRACE) == (12, 3, None)  # cost round (0) + 2 trace runs
    assert peer_report.worst_loss(PEERS, {"available": False}, GESPANN_TRACE) == (0, 1, None)


def test_targets_are_judged_round_by_round():
    verdicts = {target: (met, what) for target, met, what in peer_report.targets(PEERS, TRACE)}
    cpu = verdicts["gespann trace user-space CPU per record <= 1.5x tcplife's (fixed rate, round by round)"]
    assert cpu == (False, "2.81x, 1 round")  # 22.5 µs against 8 µs per record
    at_highest = verdicts["gespann trace user-space CPU per record <= 1.5x tcplife's (highest rate, round by round)"]
    assert at_highest == (True, "1x, 1 round")  # the cost rounds: 0.05 s over 6000 records each
    assert verdicts["gespann trace in-kernel ns per event on inet_sock_set_state <= tcplife's"][0] is True
    assert verdicts["gespann trace in-kernel ns per event on inet_sock_set_state <= 1.2x gespann run's "
                    "(metrics only)"] == (False, "1.4x, 1 round")
    assert verdicts["peak RSS of gespann run (default config) <= 2x tcplife's"][0] is False  # 30 / 13 MiB
    assert verdicts["workload slowdown of gespann's default probe set <= 2 %, TCP"][0] is True  # 1 %, 1 %
    assert verdicts["workload slowdown of gespann's default probe set <= 2 %, TCP+UDP"][1].startswith("2.0 %")
    assert verdicts["gespann trace: 0 records lost at the highest rate, in every run"] == (
        False, "worst run lost 12, 3 runs")


def test_markdown_has_the_table_the_targets_and_the_explanation():
    text = "\n".join(peer_report.markdown(PEERS, TRACE, [{"bpftrace": _gespann(1, ns=900)}]))
    assert "| figure | gespann run | gespann trace | tcplife | tcpstates |" in text
    assert "| In-kernel ns per event, inet_sock_set_state | 300 | 420 | 3000 | 9000 |" in text
    assert ("| Records lost at the highest rate, worst run | — | 12 of 3 runs | 5 of 3 runs, said lost at most 5 | "
            in text)
    assert "gespann run 300 ns, best peer bpftrace 900 ns" in text  # the main section's bpftrace is a peer too
    assert "Why tcplife costs what it costs" in text and "750 ns per event against 3000 ns" in text
    assert "tcplife then costs 2500 ns and tcpstates 8000 ns per event" in text
    assert "| In-kernel ns per event, inet_sock_set_state, reader stopped, perf buffer full (no output, no " \
           "interrupt) | — | — | 750 | 700 |" in text
    assert peer_report.markdown({"note": "not measured: tcplife not installed"}, {})[-1] == (
        "- not measured: tcplife not installed")


def test_a_slowdown_noisier_than_its_target_is_not_judged_and_points_to_the_stable_figure():
    noisy = {**PEERS, "udp_rounds": [{NONE: {"rate": 10000}, GESPANN: {"rate": 9000}},
                                     {NONE: {"rate": 10000}, GESPANN: {"rate": 10500}}],
             "kernel_cost": [{**PEERS["kernel_cost"][0], "gespann, TCP+UDP": _gespann(9000, ns=400)}]}
    verdicts = {target: (met, what) for target, met, what in peer_report.targets(noisy, TRACE)}
    met, what = verdicts["workload slowdown of gespann's default probe set <= 2 %, TCP+UDP"]
    assert met is None and "spread over 15 points" in what and "in-kernel 4000 ns per connection" in what


def test_a_guest_is_told_by_its_cpu_flags():
    from bench import peers

    assert peers.virtual_machine("processor : 0\nflags : fpu vme hypervisor x2apic\n") is True
    assert peers.virtual_machine("flags : fpu vme x2apic\n") is False


@pytest.mark.skipif(__import__("shutil").which("gcc") is None, reason="needs gcc (tools/setup-host.sh bench)")
def test_loadgen_refuses_a_bad_rate_or_udp_count(tmp_path):
    import subprocess

    binary = loadgen.build(tmp_path / "loadgen")
    for argv in (["10", "5", "2", "64", "-1"], ["10", "5", "2", "64", "0", "-1"], ["10", "5", "2", "64", "0", "1001"],
                 ["10", "5", "2", "64", "0", "1", "extra"]):
        done = subprocess.run([str(binary), *argv], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and done.stderr.startswith("usage: loadgen"), argv


def test_chart_draws_the_peer_section(tmp_path):
    pytest.importorskip("matplotlib", reason="the bench extra (make bench) installs matplotlib")
    from bench import chart
    from test_bench_report import RESULTS

    chart.write({**RESULTS, "peers": PEERS}, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [title.split("\n")[-1] for title, _ in chart._peer_panels({"peers": PEERS})] == [
        "start-up wall (s)", "peak RSS (MiB)", "in-kernel ns per inet_sock_set_state event",
        "at 2000 conn/s (µs)", "workload slowdown, TCP (%)"]
