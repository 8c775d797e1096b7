"""gespann stopped (SIGSTOP) while connections come and go, then resumed: the kernel keeps counting
meanwhile, so the figures stay exact against the namespace's own counters (/proc/net/snmp), no counter
goes back, and records that found the kernel's buffer full are counted as lost, never silently missing."""
import contextlib
import os
import signal
import socket
import time

import mib
import pytest
from gespann_process import GespannRun, free_port, total
from tcp_traffic import TcpTraffic, refused

pytestmark = [pytest.mark.root, pytest.mark.process]

#: A 1 MiB ring buffer (events.ringbuf_bytes; the default holds four times as much), 136 bytes a record
#: with its header: 7,710 records fit. 6,000 connections end twice each (client and server), more than fit.
RING_BYTES, CONNECTIONS = 1 << 20, 6000


def config(port: int, namespace, *extra: str) -> str:
    return "\n".join(["exporters:", f"  - {{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}",
                      *extra, f"scope: {{netns: {namespace.path}}}", ""])


def exchanges(namespace, count: int, traffic: TcpTraffic) -> dict[str, int]:
    """`count` connections that send 10 bytes and get 20 back, and the namespace's Tcp counters they moved."""
    with namespace.enter():
        before = mib.counters()["Tcp"]
        for _ in range(count):
            traffic.exchange(10, 20)
        after = mib.counters()["Tcp"]
    return {name: after[name] - before[name] for name in ("ActiveOpens", "PassiveOpens")}


@contextlib.contextmanager
def stopped_for(process: GespannRun, seconds: float):
    """SIGSTOP now; the caller's work runs; SIGCONT once `seconds` have passed since the stop."""
    start = time.monotonic()
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        os.kill(process.pid, signal.SIGCONT)


def test_a_full_ring_buffer_while_the_reader_is_stopped_is_counted_lost_and_metrics_stay_exact(namespace, tmp_path):
    port = free_port()
    records = tmp_path / "records.jsonl"
    with GespannRun(config(port, namespace, f"  - {{type: jsonl, settings: {{path: {records}}}}}",
                           f"events: {{ringbuf_bytes: {RING_BYTES}}}"), tmp_path,
                    port) as gespann:
        gespann.wait_serving()
        with namespace.enter():
            traffic = TcpTraffic()
        with stopped_for(gespann, 30):
            opened = exchanges(namespace, CONNECTIONS, traffic)
        ends = 2 * CONNECTIONS
        lines = lambda: len(records.read_text().splitlines())  # noqa: E731
        metrics = gespann.wait_metrics(lambda m: lines() + total(m, "gespann_records_lost_total") >= ends)
        assert opened == {"ActiveOpens": CONNECTIONS, "PassiveOpens": CONNECTIONS}
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == opened["ActiveOpens"]
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="server"}'] == opened["PassiveOpens"]
        assert metrics["gespann_closed_connections_total"] == ends
        assert metrics["gespann_open_connections"] == 0
        assert metrics["gespann_bytes_sent_total"] == metrics["gespann_bytes_received_total"] == 30 * CONNECTIONS
        lost = total(metrics, "gespann_records_lost_total")
        assert lost > 0, "the ring buffer never filled: the test proves nothing"
        assert lines() + lost == ends  # every record either written or counted lost, none twice
        traffic.close()
    assert gespann.process.returncode == 0, gespann.log()
    assert "Traceback" not in gespann.log()


COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def counters(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if key.split("{")[0].endswith(COUNTER_SUFFIXES)}


def test_stopped_for_a_minute_and_resumed_stays_exact_and_no_counter_goes_back(namespace, tmp_path):
    port = free_port()
    with GespannRun(config(port, namespace), tmp_path, port) as gespann:
        gespann.wait_serving()
        with namespace.enter():
            start = mib.counters()["Tcp"]
            traffic = TcpTraffic()
            held = [traffic.connect() for _ in range(3)]  # open across the stop
        exchanges(namespace, 50, traffic)
        before = gespann.wait_metrics(lambda m: m["gespann_closed_connections_total"] == 100)
        with stopped_for(gespann, 60):
            exchanges(namespace, 500, traffic)
            with namespace.enter():
                refused(socket.AF_INET)
            for sock in held.pop():
                sock.close()
        after = gespann.wait_metrics(lambda m: m["gespann_closed_connections_total"] == 2 * (50 + 500 + 1))
        with namespace.enter():
            end = mib.counters()["Tcp"]
        went_back = {key: (before[key], after.get(key)) for key, value in counters(before).items()
                     if after.get(key, -1) < value}
        assert not went_back
        assert after["gespann_closed_connections_total"] == 2 * (50 + 500 + 1)
        failed = total(after, "gespann_connections_failed_total")
        assert after['gespann_connections_failed_total{reason="refused"}'] == failed == 1
        # The kernel counts a connect as an active open when it sends the SYN, refused or not.
        assert after['gespann_connections_opened_total{protocol="tcp",role="client"}'] + failed == (
            end["ActiveOpens"] - start["ActiveOpens"]) == 554
        assert after['gespann_connections_opened_total{protocol="tcp",role="server"}'] == (
            end["PassiveOpens"] - start["PassiveOpens"]) == 553
        assert after["gespann_open_connections"] == end["CurrEstab"] == 2 * 2  # two held, both ends
        for client, server in held:
            client.close(), server.close()
        traffic.close()
    assert gespann.process.returncode == 0, gespann.log()
    assert "Traceback" not in gespann.log()
