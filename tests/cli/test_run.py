"""`gespann run` as a user runs it: a real process serving real figures, stopped by a signal.

gespann is scoped to a namespace the test makes, the traffic runs there, and
the metrics page must show exactly that traffic; SIGTERM must leave nothing of
gespann's loaded in the kernel.
"""
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mib
import pytest
from loopback import wait_for
from tcp_traffic import TcpTraffic, refused

pytestmark = [pytest.mark.root, pytest.mark.process]
BPFTOOL = "/usr/sbin/bpftool"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loaded_programs() -> set[str]:
    listing = json.loads(subprocess.run([BPFTOOL, "-j", "prog", "list"], capture_output=True, text=True,
                                        check=True).stdout or "[]")
    return {p.get("name", "") for p in listing if p.get("name", "").startswith("gsp_")}


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and not line.startswith("#"))}


def test_run_serves_exact_figures_and_leaves_nothing_behind(namespace, tmp_path):
    # The kernel frees a program some time after its last fd closes: an earlier test's may still show.
    wait_for(lambda: loaded_programs() == set(), timeout=10)
    assert loaded_programs() == set(), "gsp_ programs loaded before the test"
    port = free_port()
    config = tmp_path / "gespann.yaml"
    config.write_text(f"log_level: info\n"
                      f"exporters:\n  - type: prometheus\n    settings: {{port: \"{port}\", address: 127.0.0.1}}\n"
                      f"  - type: jsonl\n    settings: {{path: {tmp_path / 'events.jsonl'}}}\n"
                      f"scope: {{netns: {namespace.path}}}\n")
    gespann = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _serving(url), timeout=30)
        with namespace.enter():
            traffic = TcpTraffic()
            for sent, replied in ((10, 20), (300, 4000), (0, 1)):
                traffic.exchange(sent, replied)
            refused(socket.AF_INET)
            traffic.listener.close()
        metrics = scrape(url)
        assert metrics["gespann_total_connections"] == 6  # three connections, seen from both ends
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == 3
        assert metrics["gespann_closed_connections_total"] == 6
        assert metrics["gespann_failed_connections_total"] == 1
        assert metrics['gespann_connections_failed_total{reason="refused"}'] == 1
        assert metrics["gespann_bytes_sent_total"] == metrics["gespann_bytes_received_total"] == 4331
        assert metrics["gespann_open_connections"] == 0
    finally:
        gespann.send_signal(signal.SIGTERM)
        out, err = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, err
    started = [line for line in err.splitlines() if "running: probes" in line]
    assert len(started) == 1 and f"prometheus http://127.0.0.1:{port}/metrics" in started[0]
    assert "open TCP connections by " in started[0] and "UDP flows by " in started[0]  # the paths taken
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sorted((e["outcome"], e["role"], e["bytes_sent"], e["bytes_received"]) for e in events) == sorted(
        [("close", "client", s, r) for s, r in ((10, 20), (300, 4000), (0, 1))]
        + [("close", "server", r, s) for s, r in ((10, 20), (300, 4000), (0, 1))]
        + [("failed", "client", 0, 0)])  # every connection, once, written out before exit
    assert "Traceback" not in err
    wait_for(lambda: loaded_programs() == set(), timeout=5)
    assert loaded_programs() == set()


EXAMPLE_PROBE = Path(__file__).resolve().parents[2] / "examples" / "probes" / "tcp_connects_by_port.py"


def test_run_serves_a_probe_from_outside_the_tree(namespace, tmp_path):
    """extra_probes: one file, named in the config, is attached, read and served with nothing else changed."""
    port = free_port()
    config = tmp_path / "gespann.yaml"
    config.write_text(f"exporters: [{{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}]\n"
                      f"extra_probes: [{EXAMPLE_PROBE}]\n"
                      f"scope: {{netns: {namespace.path}, protocols: [tcp]}}\n")
    gespann = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _serving(url), timeout=30)
        with namespace.enter():
            before = mib.tcp("ActiveOpens")
            traffic = TcpTraffic()
            for _ in range(4):
                traffic.exchange(1, 1)
            traffic.listener.close()
            opened = mib.tcp("ActiveOpens") - before
        metrics = scrape(url)
        assert opened == 4
        assert metrics[f'gespann_tcp_connects_by_remote_port_total{{remote_port="{traffic.port}"}}'] == opened
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == opened
        assert any(name.startswith('gespann_probe_info{mode=') and 'probe="tcp_connects_by_port"' in name
                   for name in metrics)
    finally:
        gespann.send_signal(signal.SIGTERM)
        out, err = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, err
    assert "tcp_connects_by_port=" in err  # the start-up line names it with its flavour
    assert "Traceback" not in err


def _serving(url: str) -> bool:
    try:
        scrape(url)
        return True
    except OSError:
        time.sleep(0.1)
        return False


def test_port_in_use_is_one_line_and_nonzero(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = tmp_path / "gespann.yaml"
        config.write_text(f"exporters: [{{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}]\n")
        result = subprocess.run([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("gespann: ")]
    assert len(errors) == 1 and str(port) in errors[0] and "in use" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    wait_for(lambda: loaded_programs() == set(), timeout=10)
    assert loaded_programs() == set()


def loaded_maps() -> set[str]:
    listing = json.loads(subprocess.run([BPFTOOL, "-j", "map", "list"], capture_output=True, text=True,
                                        check=True).stdout or "[]")
    return {m.get("name", "") for m in listing if m.get("name", "").startswith("gsp_")}


@pytest.mark.parametrize("jsonl", [False, True], ids=["prometheus only", "with jsonl"])
def test_records_are_asked_for_exactly_when_an_exporter_consumes_events(tmp_path, jsonl):
    """The record channel (gsp_records) is made only for a jsonl exporter; `adapters:`, the older name, still runs."""
    wait_for(lambda: "gsp_records" not in loaded_maps(), timeout=10)
    port = free_port()
    config = tmp_path / "gespann.yaml"
    config.write_text(f"adapters:\n  - type: prometheus\n    settings: {{port: {port}, address: 127.0.0.1}}\n"
                      + (f"  - type: jsonl\n    settings: {{path: {tmp_path / 'events.jsonl'}}}\n" if jsonl else "")
                      + "scope: {protocols: [tcp]}\n")
    gespann = subprocess.Popen([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _serving(f"http://127.0.0.1:{port}/metrics"), timeout=30)
        maps = loaded_maps()
    finally:
        gespann.send_signal(signal.SIGTERM)
        _, err = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, err
    assert ("gsp_records" in maps) is jsonl, maps
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert warnings == [warnings[0]] and warnings[0].endswith(
        " WARNING config: adapters is the older name of exporters; rename the key to exporters"), err
