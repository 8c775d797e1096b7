"""An exporter's destination failing under a running gespann: the jsonl file's disk full, the DogStatsD
agent gone. gespann keeps running and serving exact metrics, says so once, counts what it could not
deliver, and delivers again once the destination is back."""
import socket
import time

import mib
import pytest
from dogstatsd_agent import FakeAgent
from gespann_process import GespannRun, free_port, total
from tcp_traffic import TcpTraffic
from tiny_disk import fill, tiny_tmpfs

pytestmark = [pytest.mark.root, pytest.mark.process]


def prometheus(port: int) -> str:
    return f"  - {{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}"


def exchanges(namespace, traffic: TcpTraffic, count: int) -> int:
    """`count` connections (10 bytes sent, 20 back); the namespace's ActiveOpens they moved."""
    with namespace.enter():
        before = mib.tcp("ActiveOpens")
        for _ in range(count):
            traffic.exchange(10, 20)
        return mib.tcp("ActiveOpens") - before


def lines_of(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_full_disk_under_the_jsonl_file_is_one_error_a_count_and_writing_resumes(namespace, tmp_path):
    port = free_port()
    with tiny_tmpfs(tmp_path / "disk") as disk:
        records = disk / "records.jsonl"
        config = "\n".join(["exporters:", prometheus(port), f"  - {{type: jsonl, settings: {{path: {records}}}}}",
                            f"scope: {{netns: {namespace.path}}}", ""])
        with GespannRun(config, tmp_path, port) as gespann:
            gespann.wait_serving()
            with namespace.enter():
                traffic = TcpTraffic()
            filler = fill(disk)
            while_full = exchanges(namespace, traffic, 40)
            metrics = gespann.wait_metrics(lambda m: m.get("gespann_jsonl_unwritten_total") == 2 * 40)
            assert metrics["gespann_jsonl_unwritten_total"] == 2 * while_full == 80, gespann.log()
            assert lines_of(records) == []
            assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == while_full
            assert metrics["gespann_closed_connections_total"] == 80  # the metrics did not stop

            filler.unlink()  # space again
            after_full = exchanges(namespace, traffic, 30)
            deadline = time.monotonic() + 20
            while len(lines_of(records)) < 2 * after_full and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(lines_of(records)) == 2 * after_full == 60
            metrics = gespann.scrape()
            assert metrics["gespann_jsonl_unwritten_total"] == 80
            assert total(metrics, "gespann_records_lost_total") == 0
            assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == 70
            traffic.close()
        log = gespann.log()
        assert gespann.process.returncode == 0, log
    errors = [line for line in log.splitlines() if "jsonl: cannot write" in line]
    assert len(errors) == 1 and " ERROR " in errors[0] and "No space left on device" in errors[0], log
    assert any("jsonl: writing to" in line and "again" in line for line in log.splitlines()), log
    assert "Traceback" not in log


def opened_sent(lines) -> float:
    """The client connections opened, as the increments the agent received add up."""
    return sum(line.value for line in lines if line.name == "gespann.connections.opened"
               and "role:client" in line.tags and "protocol:tcp" in line.tags)


def test_the_dogstatsd_agent_gone_then_back_is_counted_and_the_figures_catch_up(namespace, tmp_path):
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a UDP port nothing listens on, for now
        probe.bind(("127.0.0.1", 0))
        agent_port = probe.getsockname()[1]
    config = "\n".join(["exporters:", prometheus(port),
                        f"  - {{type: datadog, settings: {{host: '127.0.0.1:{agent_port}', flush_interval: 0.5}}}}",
                        f"scope: {{netns: {namespace.path}}}", ""])
    with GespannRun(config, tmp_path, port) as gespann:
        gespann.wait_serving()
        with namespace.enter():
            traffic = TcpTraffic()
        while_away = exchanges(namespace, traffic, 20)
        metrics = gespann.wait_metrics(lambda m: m.get("gespann_datadog_unsent_total", 0) > 0
                                       and m["gespann_closed_connections_total"] == 40)
        unsent = metrics["gespann_datadog_unsent_total"]
        assert unsent > 0 and gespann.process.poll() is None
        time.sleep(1.2)  # more flushes fail: counted, not logged again
        assert gespann.scrape()["gespann_datadog_unsent_total"] > unsent

        agent = FakeAgent(port=agent_port)
        try:
            after = exchanges(namespace, traffic, 30)
            received, deadline = [], time.monotonic() + 20
            while opened_sent(received) < while_away + after and time.monotonic() < deadline:
                received += agent.lines(quiet=0.3, first=1.0)
            # Increments that could not be sent are sent with the next flush that can: nothing is lost.
            assert opened_sent(received) == while_away + after == 50
            unsent = gespann.scrape()["gespann_datadog_unsent_total"]
            agent.lines(quiet=0.3, first=1.0)  # one flush more
            assert gespann.scrape()["gespann_datadog_unsent_total"] == unsent  # nothing fails any more
        finally:
            agent.close()
            traffic.close()
    log = gespann.log()
    assert gespann.process.returncode == 0, log
    running = log.split(" stopping: ")[0]  # the flush on stop finds the agent gone again, rightly
    warnings = [line for line in running.splitlines() if "datadog: cannot send" in line]
    assert len(warnings) == 1 and "refused" in warnings[0], log
    assert any("datadog: sending to the agent" in line and "again" in line for line in running.splitlines()), log
    assert "Traceback" not in log
