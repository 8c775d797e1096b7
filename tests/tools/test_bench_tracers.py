"""What the bench reads from each tracer: bpftrace's maps, gespann's /metrics and start-up line,
trace-mode records and losses, bcc's output and failures."""
from pathlib import Path

import yaml
from bench import bcc_tracer, bpftrace_tracer, gespann_tracer, trace_mode
from bench.counts import ZERO, Counts

BPFTRACE_EXIT = """Attaching 5 probes...
ready


@bytes_received: 650000
@closed[2]: 5000
@closed[1]: 4999
@failed[111]: 3
@opened[2]: 5000
@opened[1]: 5000
@resets[1]: 1
@rtt_us:
[16, 32)               2 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
"""


def test_bpftrace_counters_come_from_the_maps_it_prints_at_exit():
    counts = bpftrace_tracer.counts_from_output(BPFTRACE_EXIT)
    assert counts == Counts(5000, 5000, 4999, 5000, resets=1, failed=3)
    assert bpftrace_tracer.parse_maps(BPFTRACE_EXIT)[("bytes_received", "")] == 650000
    assert bpftrace_tracer.attaching_probes(BPFTRACE_EXIT) == 5
    assert bpftrace_tracer.counts_from_output("") == ZERO


def test_counts_match_only_when_every_end_is_there_and_nothing_else():
    assert Counts(100, 100, 100, 100, 0, 0).matches(100)
    assert Counts(100, 100, 99, 100, 0, 0).missing(100) == 1
    assert not Counts(100, 100, 100, 100, 1, 0).matches(100)
    assert not Counts(100, 100, 100, 100, 0, 0).matches(101)
    assert Counts(5, 5, 5, 5, 0, 0).minus(Counts(1, 1, 1, 1, 0, 0)) == Counts(4, 4, 4, 4, 0, 0)


METRICS = """# HELP gespann_connections_opened_total Connections seen since start
# TYPE gespann_connections_opened_total counter
gespann_connections_opened_total{protocol="tcp",role="client"} 300.0
gespann_connections_opened_total{protocol="tcp",role="server"} 300.0
gespann_connections_opened_total{protocol="udp",role="client"} 7.0
gespann_connections_closed_total{protocol="tcp",role="client"} 299.0
gespann_connections_closed_total{protocol="tcp",role="server"} 300.0
gespann_connections_reset_total{direction="sent"} 1.0
gespann_connections_reset_total{direction="received"} 0.0
gespann_connections_failed_total{reason="refused"} 2.0
gespann_connections_failed_total{reason="timeout"} 0.0
"""


def test_gespann_counters_are_the_tcp_series_of_its_metrics_page():
    assert gespann_tracer.counts_from_metrics(METRICS) == Counts(300, 300, 299, 300, resets=1, failed=2)


def test_gespann_config_serves_on_loopback_and_scopes_to_the_namespace():
    config = yaml.safe_load(gespann_tracer.config_text(9123, "/run/netns/gespann-bench-x", "tracepoint"))
    assert config["exporters"] == [{"type": "prometheus", "settings": {"port": 9123, "address": "127.0.0.1"}}]
    assert config["scope"] == {"netns": "/run/netns/gespann-bench-x"}
    assert config["attach"] == {"mode": "tracepoint"}
    assert "attach" not in yaml.safe_load(gespann_tracer.config_text(9123, None))


def test_the_probe_set_is_read_from_the_start_up_line():
    line = ("2026-11-25 01:04:29,807 INFO gespann 0.1.0 running: probes tcp_lifecycle=tp_btf/inet_sock_set_state"
            "(bpf_link), tcp_reset_sent=tp_btf/tcp_send_reset(bpf_link); exporting to prometheus http://x/metrics")
    assert gespann_tracer.probes_attached(line) == ("tcp_lifecycle=tp_btf/inet_sock_set_state(bpf_link), "
                                                    "tcp_reset_sent=tp_btf/tcp_send_reset(bpf_link)")
    assert gespann_tracer.probes_attached("Traceback ...") is None


def test_trace_records_are_json_lines_and_gespanns_own_loss_figure_is_kept():
    stream = '{"role": "client", "outcome": "close"}\n{"role": "server"}\nnot json\n[1, 2]\n'
    assert trace_mode.count_records(stream) == trace_mode.RecordCount(2, None)
    log = "gespann: 4846 connection records were lost (the kernel's buffer was full)\n"
    assert trace_mode.count_records(stream, log) == trace_mode.RecordCount(2, 4846)
    assert trace_mode.count_records('{"records_lost": 12}\n').reported_lost == 12
    assert trace_mode.missing(records=19_000, connections=10_000, per_connection=2) == 1000
    assert trace_mode.missing(records=20_000, connections=10_000, per_connection=2) == 0


def test_bcc_failures_become_one_line_results():
    compile_failure = ("modprobe: FATAL: Module kheaders not found\nUnable to find kernel headers. Try rebuilding\n"
                       "Traceback (most recent call last):\nException: Failed to compile BPF module <text>\n")
    assert bcc_tracer.why_not(compile_failure) == bcc_tracer.NO_HEADERS == "cannot run: no kernel headers"
    assert bcc_tracer.why_not("perf_event_open failed: Permission denied\n\n") == \
        "cannot run: perf_event_open failed: Permission denied"


def test_bcc_lost_samples_are_added_up():
    assert bcc_tracer.lost_samples("Possibly lost 12 samples\nPID COMM\nPossibly lost 1 samples\n") == 13
    assert bcc_tracer.lost_samples("") == 0


def test_bcc_output_header_and_event_lines(tmp_path: Path):
    out = tmp_path / "tcplife.out"
    out.write_text("")
    assert not bcc_tracer.header_seen(out, "PID")
    out.write_text("PID   COMM       LADDR           LPORT RADDR           RPORT TX_KB RX_KB MS\n"
                   "812   loadgen    127.0.0.1       40000 127.0.0.1       41000     0     0 0.05\n"
                   "812   loadgen    127.0.0.1       41000 127.0.0.1       40000     0     0 0.05\n")
    assert bcc_tracer.header_seen(out, "PID") and bcc_tracer.event_lines(out, "PID") == 2
    assert not bcc_tracer.header_seen(tmp_path / "absent", "PID")
