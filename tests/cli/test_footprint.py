"""What a default `gespann run` loads: only what its configured exporters need, warm start or cold.

gespann's memory and start-up are benchmarked against bpftrace and libbpf-tools
(tools/bench.py); most of both went to imports. So the real process, started as
a user starts it, writes the names of the modules it holds when it exits: a
Prometheus-only run must not import the DataDog client (nor the HTTP stack it
brings), nor a general netlink library, nor prometheus-client (needed only
for TLS), nor ssl or hashlib (each maps libcrypto), nor construct (a quarter of the process's
memory: maps and records decode with struct). It must not parse the kernel's
BTF either: a warm start reads the kernel-types cache, and a cold one leaves
the parsing to a child process (gespann/btf/apart.py), whose modules are its own.
"""
import os
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
NOT_NEEDED = {"datadog", "requests", "urllib3", "pyroute2", "construct", "prometheus_client", "ssl", "_ssl",
              "hashlib", "_hashlib", "email", "http"}
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


#: `python -m gespann`, writing the names of the modules it holds, at its exit, to $GESPANN_TEST_MODULES.
DRIVER = """
import atexit, os, runpy, sys
def record():
    with open(os.environ["GESPANN_TEST_MODULES"], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
atexit.register(record)
sys.argv[0] = "gespann"
runpy.run_module("gespann", run_name="__main__", alter_sys=True)
"""


def imported_by_run(config: str, port: int, tmp_path, cache_home=None) -> set[str]:
    """The modules a `gespann run` held when it stopped, once it had served a page."""
    listing = tmp_path / "modules.txt"
    env = {**os.environ, "GESPANN_TEST_MODULES": str(listing)}
    if cache_home is not None:
        env["XDG_CACHE_HOME"] = str(cache_home)
    gespann = subprocess.Popen([sys.executable, "-c", DRIVER, "run", "--config", config], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: serving(port), timeout=30)
    finally:
        gespann.send_signal(signal.SIGTERM)
        _, stderr = gespann.communicate(timeout=30)
    assert gespann.returncode == 0, stderr[-2000:]
    return set(listing.read_text().split())


@pytest.mark.parametrize("start", ["warm", "cold"])
def test_a_prometheus_only_run_imports_neither_datadog_nor_a_netlink_library(tmp_path, start):
    namespace = Namespace()
    try:
        port = free_port()
        config = prometheus_config(tmp_path, port, f"scope: {{netns: {namespace.path}}}\n")
        cache_home = tmp_path / "cache"
        if start == "warm":
            imported_by_run(config, port, tmp_path, cache_home)  # fills the kernel-types cache
        modules = imported_by_run(config, port, tmp_path, cache_home)
    finally:
        namespace.remove()
    assert "gespann.exporters.prometheus" in modules and "gespann.probes.tcp.sock_diag" in modules
    assert {m for m in modules if m.split(".")[0] in NOT_NEEDED} == set()
    assert modules & PARSER == set()
    assert list((cache_home / "gespann").glob("btf-*.json")), "the child's result is cached like any other"


def test_a_datadog_exporter_still_brings_its_client(tmp_path):
    port = free_port()
    config = prometheus_config(tmp_path, port, "  - type: datadog\n    settings: {host: '127.0.0.1:9'}\n")
    assert "datadog" in imported_by_run(config, port, tmp_path)
