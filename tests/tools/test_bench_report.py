"""From raw rounds to medians, ratios, verdicts, the markdown table and the chart."""
import pytest
from bench import headers, report, summary

MIB = 2 ** 20


def tracer(wall, cpu, rss_mib, rate, tracer_cpu=0.001, load_cpu_us=75.0, missing=0, connections=30000):
    return {"startup_wall_s": wall, "startup_cpu_s": cpu, "peak_rss_bytes": rss_mib * MIB, "rate": rate,
            "cpu_s": tracer_cpu, "connections": connections, "load_cpu_us_per_connection": load_cpu_us,
            "missing": missing, "counts_match": missing == 0}


def cost(ns_per_run, runs=300_000, connections=30_000):
    return {"connections": connections,
            "per_tracepoint": {"inet_sock_set_state": {"runs": runs, "run_time_ns": ns_per_run * runs},
                               "tcp_send_reset": {"runs": 0, "run_time_ns": 0}}}


RESULTS = {
    "meta": {"date": "2026-11-25", "kernel": "6.18.44", "cpus": 2, "rounds": 3, "cost_rounds": 2,
             "connections": 30000, "threads": 2, "probes": "tcp_lifecycle=tp_btf/inet_sock_set_state(bpf_link)"},
    "rounds": [
        {"none": {"rate": 20000, "load_cpu_us_per_connection": 70.0},
         "gespann": tracer(0.40, 0.38, 40, 19600), "bpftrace": tracer(1.0, 0.9, 110, 18000)},
        {"none": {"rate": 10000, "load_cpu_us_per_connection": 70.0},  # a slow round: ratios are per round
         "gespann": tracer(0.50, 0.40, 41, 9900), "bpftrace": tracer(0.9, 0.9, 111, 9000)},
        {"none": {"rate": 20000, "load_cpu_us_per_connection": 70.0},
         "gespann": tracer(0.45, 0.42, 40, 19800), "bpftrace": tracer(0.95, 0.9, 110, 18200)},
    ],
    "kernel_cost": [{"gespann": cost(300), "bpftrace": cost(500)}, {"gespann": cost(320), "bpftrace": cost(520)}],
    "trace": {"available": False, "note": "trace mode: not available in this build"},
    "bcc_host": {"bcc tcplife": "cannot run: no kernel headers"},
}


def by_figure(rows, start):
    return next(r for r in rows if r.figure.startswith(start))


def test_spread_and_paired_ratios():
    assert summary.spread([3, None, 1, 2]) == summary.Spread(2, 1, 3, 3)
    assert summary.spread([None]) is None
    assert summary.paired_ratios([9, 18, None], [10, 20, 5]) == [0.9, 0.9]
    assert summary.slowdown([9, 18], [10, 20]).median == pytest.approx(0.1)
    assert summary.per_10k(cpu_s=0.5, connections=50_000) == pytest.approx(100)


def test_rows_hold_medians_ratios_and_verdicts():
    rows = report.rows(RESULTS)
    startup = by_figure(rows, "Start-up: probes attached")
    assert startup.gespann.median == 0.45 and startup.peer.median == 0.95
    assert startup.ratio == pytest.approx(0.45 / 0.95) and startup.met is True
    rss = by_figure(rows, "Peak RSS")
    assert rss.ratio == pytest.approx(40 / 110) and rss.met is True
    kernel = by_figure(rows, "In-kernel cost per event")
    assert kernel.gespann.median == 310 and kernel.peer.median == 510 and kernel.met is True
    per_connection = by_figure(rows, "In-kernel cost per loopback connection")
    assert per_connection.gespann.median == pytest.approx(3100)
    slow = by_figure(rows, "Workload slowdown")
    assert slow.gespann.median == pytest.approx(0.01) and slow.met is True  # 2 %, 1 %, 1 %: per round
    assert slow.peer.median == pytest.approx(0.1)
    lost = by_figure(rows, "Metrics mode")
    assert lost.met is True and "180000 connection ends" in lost.note
    assert not any("tracepoint mode" in r.figure for r in rows)  # not measured: no row


def test_each_tracepoint_gespann_ran_on_has_its_row_judged_only_against_a_measured_peer():
    udp = {"runs": 300_000, "run_time_ns": 60_000_000}
    samples = [{"gespann": {**cost(300), "per_tracepoint": {**cost(300)["per_tracepoint"], "net_dev_queue": udp}},
                "gespann (tracepoint mode)": cost(280), "bpftrace": cost(500)}]
    rows = report.rows({**RESULTS, "kernel_cost": samples})
    kernel = [r for r in rows if r.figure.startswith("In-kernel cost per event")]
    assert [r.figure for r in kernel] == [
        "In-kernel cost per event, inet_sock_set_state (gespann: default attach)",
        "In-kernel cost per event, inet_sock_set_state (gespann: tracepoint mode)",
        "In-kernel cost per event, net_dev_queue (gespann: default attach)"]
    assert kernel[1].met is True and kernel[2].gespann.median == 200 and kernel[2].met is None
    assert "<= 1x: not judged" in report.markdown({**RESULTS, "kernel_cost": samples})
    per_connection = by_figure(rows, "In-kernel cost per loopback connection")
    assert per_connection.gespann.median == pytest.approx((90_000_000 + 60_000_000) / 30_000)


def test_a_probe_set_that_changed_during_the_run_is_flagged():
    runs = [{"gespann": {"probes": "tcp_lifecycle=a"}}, {"gespann": {"probes": "tcp_lifecycle=a, udp_send=b"}}]
    assert report.probe_sets({"rounds": runs[:1], "kernel_cost": runs[:1]}) == {"probes": "tcp_lifecycle=a"}
    assert report.probe_sets({"rounds": runs, "kernel_cost": runs[1:]}) == {
        "probes": "tcp_lifecycle=a, udp_send=b", "probes_changed": ["tcp_lifecycle=a", "tcp_lifecycle=a, udp_send=b"]}
    meta = {**RESULTS["meta"], "probes_changed": ["tcp_lifecycle=a", "tcp_lifecycle=a, udp_send=b"]}
    assert "WARNING: the probe set changed during the run" in report.markdown({**RESULTS, "meta": meta})


def test_a_missed_target_and_a_miscount_say_so():
    results = {**RESULTS, "rounds": [dict(r, gespann=tracer(0.9, 0.8, 80, r["none"]["rate"] * 0.9, missing=3))
                                     for r in RESULTS["rounds"]]}  # 10 % slower in every round: no noise
    verdicts = report.verdicts(results)
    assert verdicts["Start-up: probes attached, first metrics / first output (wall): <= 0.5x"] is False
    assert verdicts["Peak RSS: <= 0.4x"] is False
    assert verdicts["Workload slowdown (round by round vs no tracer): <= 2 %"] is False
    assert verdicts["Metrics mode: connection ends not counted: 0"] is False
    assert "counts DIFFER" in report.markdown(results)


def test_a_slowdown_noisier_than_its_target_is_not_judged_and_points_to_the_stable_figures():
    results = {**RESULTS, "rounds": [dict(r, gespann=tracer(0.4, 0.4, 40, rate)) for r, rate in
                                     zip(RESULTS["rounds"], (20400, 9000, 19800))]}  # +2 %, -10 %, -1 %
    rows = report.rows(results)
    slow = by_figure(rows, "Workload slowdown")
    assert slow.met is None and "spread over 12 points" in slow.note and "in-kernel cost per connection" in slow.note
    assert report.verdicts(results)["Workload slowdown (round by round vs no tracer): <= 2 %"] is None
    share = by_figure(rows, "In-kernel cost per connection as a share")
    assert share.gespann.median == pytest.approx(3100 / 70_000) and share.peer.median == pytest.approx(5100 / 70_000)


def test_markdown_table_and_notes():
    text = report.markdown(RESULTS)
    assert "| figure | gespann | bpftrace | gespann / bpftrace | target |" in text
    assert "| Peak RSS (MiB) | 40.0 (40.0–41.0) | 110.0 (110.0–111.0) | 0.364x | <= 0.4x: met |" in text
    assert "- trace mode: not available in this build" in text
    assert "- bcc tcplife on this machine: cannot run: no kernel headers" in text
    assert "tcp_lifecycle=tp_btf/inet_sock_set_state(bpf_link)" in text


def test_trace_mode_rows_when_measured():
    run = {"cpu_s": 1.2, "connections": 30000, "lost": 100, "rate": 15000.0, "per_connection": 2.0,
           "expected_records": 61000, "reported_lost": 100}
    rows = report.rows({**RESULTS,
                        "trace": {"available": True, "runs": [run, dict(run, lost=300, reported_lost=None)]}})
    assert by_figure(rows, "Userspace CPU per 10,000 connections, trace").gespann.median == pytest.approx(400)
    lost = by_figure(rows, "Trace mode: records lost")  # the worst run's: one lossy run is a loss
    assert lost.figure.endswith("worst of 2 runs") and lost.gespann.median == 300 and lost.met is False
    assert "lost per run: 100, 300" in lost.note and "reported lost: 100, none" in lost.note


def test_vm_section_tells_why_it_is_missing_or_shows_each_tracer():
    assert report.vm_markdown({"note": "not measured: no qemu"})[-1] == "- not measured: no qemu"
    vm = {"release": "6.1.0-56-amd64", "summary": "once each",
          "tracers": {"bcc tcplife": {"startup_wall_s": 95.0, "startup_cpu_s": 90.0, "peak_rss_bytes": 300 * MIB,
                                      "cpu_s": 2.0, "connections": 2000, "events": 4000, "expected_events": 4000,
                                      "reported_lost": 0,
                                      "per_tracepoint": {"inet_sock_set_state": {"runs": 20000,
                                                                                 "run_time_ns": 40_000_000}}},
                      "bpftrace": {"error": "bpftrace exited with status 1 before it was ready:"}}}
    text = "\n".join(report.vm_markdown(vm))
    assert "| bcc tcplife | 95.00 | 90.00 | 300.0 | 2000 | 20000 | 10000 | 4000 / 4000, said lost: 0 |" in text
    assert "| bpftrace | bpftrace exited with status 1 before it was ready: | | | | | | |" in text


def test_chart_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the bench extra (make bench) installs matplotlib")
    from bench import chart

    chart.write(RESULTS, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_header_packages_of_a_debian_release():
    assert headers.package_names("6.1.0-56-amd64") == ["linux-headers-6.1.0-56-amd64",
                                                       "linux-headers-6.1.0-56-common", "linux-kbuild-6.1"]
    with pytest.raises(headers.HeadersError, match="not a Debian kernel release"):
        headers.package_names("6.18.44-fc-v595")


def _state(count, cpu_ms, rss_mib, floor):
    return {"state": count, "cpu_ms": cpu_ms, "wall_ms": [c + 1 for c in cpu_ms], "rss_mib": rss_mib,
            "first_cpu_ms": 3 * max(cpu_ms), "first_wall_ms": 3 * max(cpu_ms) + 1,
            floor: {"cpu_ms": 9.0, "wall_ms": 11.0}}


def test_scale_section_tables_each_state_and_judges_the_targets():
    from bench import scale

    measured = {"sockets": [_state(0, [2.0, 3.0, 2.5], 40.0, "ss"), _state(72000, [800.0, 820.0, 810.0], 48.0, "ss")],
                "flows": [_state(0, [2.0, 2.0, 2.0], 40.0, "floor"), _state(100000, [90.0, 95.0, 99.0], 52.0, "floor")]}
    results = {**RESULTS, "scale": measured}
    text = report.markdown(results)
    assert "| 72,000 open sockets | 810.0 | 811.0 | 2460 | 48.0 | 9.0 | 11.0 |" in text, "first scrape apart"
    assert "| 100,000 UDP flows | 95.0 | 96.0 |" in text
    assert "- at most 50 ms of CPU per scrape at 72,000 open sockets (measured 810 ms): MISSED" in text
    assert "- RSS at most 1.25x idle at every state (measured 1.30x): MISSED" in text
    judged = report.verdicts(results)
    assert judged["scale: at most 50 ms of CPU per scrape at 72,000 open sockets (measured 810 ms)"] is False
    assert scale.verdicts({"sockets": [_state(0, [1.0], 40.0, "ss"), _state(72000, [40.0], 41.0, "ss")]}) == {
        "at most 50 ms of CPU per scrape at 72,000 open sockets (measured 40 ms)": True,
        "RSS at most 1.25x idle at every state (measured 1.02x)": True}
