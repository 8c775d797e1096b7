"""What a default `gespann run` loads: only what its configured exporters and a warm start need.

gespann's memory and start-up are benchmarked against bpftrace (tools/bench.py);
most of both went to imports. So the real process, started as a user starts it,
is watched with `python -X importtime`, which names every module as it is
imported: a Prometheus-only run must not import the DataDog client (nor the
HTTP stack it brings), nor a general netlink library, nor construct (a quarter
of the process's memory: maps and records decode with struct), and a warm start
must not parse the kernel's whole BTF.
"""
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from loopback import wait_for
from namespaces import Namespace

pytestmark = [pytest.mark.root, pytest.mark.process]

#: Top-level packages a Prometheus-only run has no use for.
NOT_NEEDED = {"datadog", "requests", "urllib3", "pyroute2", "construct"}
#: The BTF parser: a warm start reads the kernel-types cache instead.
PARSER = {"gespann.btf.spec", "gespann.btf.resolve"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as page:
            return page.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def prometheus_config(tmp_path, port: int, extra: str = "") -> str:
    config = tmp_path / "gespann.yaml"
    config.write_text(f"exporters:\n  - type: prometheus\n    settings: {{port: {port}, address: 127.0.0.1}}\n{extra}")
    return str(config)


def imported_by_run(config: str, port: int) -> set[str]:
    """The modules a `gespann run` imported by the time it served its first page."""
    gespann = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "gespann", "run", "--config", config],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: serving(port), timeout=30)
    finally:
        gespann.send_signal(signal.SIGTERM)
        _, stderr = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_prometheus_only_run_imports_neither_datadog_nor_a_netlink_library(tmp_path):
    namespace = Namespace()
    try:
        port = free_port()
        config = prometheus_config(tmp_path, port, f"scope: {{netns: {namespace.path}}}\n")
        imported_by_run(config, port)  # the first start may fill the kernel-types cache
        modules = imported_by_run(config, port)
    finally:
        namespace.remove()
    assert "gespann.exporters.prometheus" in modules and "gespann.probes.sock_diag" in modules
    assert {m for m in modules if m.split(".")[0] in NOT_NEEDED} == set()
    assert modules & PARSER == set()


def test_a_datadog_exporter_still_brings_its_client(tmp_path):
    port = free_port()
    config = prometheus_config(tmp_path, port, "  - type: datadog\n    settings: {host: '127.0.0.1:9'}\n")
    assert "datadog" in imported_by_run(config, port)
