"""Least privilege: `gespann run` works with exactly the capabilities it documents, and without
any one of them fails with one line naming it.

The documented set is `gespann.check.NEEDED_CAPABILITIES`, the one list the README, the
systemd unit and the Kubernetes manifests are checked against (tests/deploy). gespann runs
as a pod sidecar does: inside a network namespace (one the test makes, so the counts are
exactly the test's own traffic) with `scope.netns: /proc/self/ns/net`. Two identities hold
the capabilities: an unprivileged uid given them as ambient capabilities (systemd's
AmbientCapabilities=), and uid 0 with every other capability dropped from its bounding set
(a Kubernetes container with `drop: [ALL]`).
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from bpf_objects import held_by, loaded
from identities import require_interpreter_usable_by
from loopback import wait_for
from namespaces import Namespace
from tcp_traffic import TcpTraffic, refused

from gespann.bpf.errors import CAPABILITIES
from gespann.check import NEEDED_CAPABILITIES

pytestmark = [pytest.mark.root, pytest.mark.process]

NOBODY = 65534
PORT = 9478  # the manifests' port; free in a namespace of the test's own
IDENTITIES = {"nobody-ambient": NOBODY, "root-bounding-set": 0}


def privileges(uid: int, caps) -> list[str]:
    """setpriv arguments that leave exactly `caps`: bounding and inheritable sets cut to them,
    and for a uid other than 0 the same as ambient capabilities, which survive its exec."""
    wanted = "".join(f",+{cap.removeprefix('CAP_').lower()}" for cap in caps)
    args = ["setpriv", f"--bounding-set=-all{wanted}", f"--inh-caps=-all{wanted}"]
    if uid:
        require_interpreter_usable_by(uid)
        args += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", f"--ambient-caps=-all{wanted}"]
    return args


def gespann_command(config: str, uid: int, caps, netns: str | None = None) -> list[str]:
    enter = ["nsenter", f"--net={netns}"] if netns else []
    return [*enter, *privileges(uid, caps), sys.executable, "-m", "gespann", "run", "--config", config]


@pytest.fixture
def write_config():
    """Config files an unprivileged uid can read (pytest's tmp_path is root's alone)."""
    directory = tempfile.mkdtemp(prefix="gespann-lp-")
    os.chmod(directory, 0o755)

    def write(text: str, name: str = "gespann.yaml") -> str:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(f"log_level: info\nexporters:\n  - type: prometheus\n"
                    f"    settings: {{port: \"{PORT}\", address: 127.0.0.1}}\n{text}")
        os.chmod(path, 0o644)
        return path

    yield write
    shutil.rmtree(directory)


def effective_capabilities(pid: int) -> set[str]:
    """A process's CapEff: the capabilities gespann knows by name, any other bit as its number."""
    with open(f"/proc/{pid}/status") as status:
        mask = int(next(line for line in status if line.startswith("CapEff:")).split()[1], 16)
    names = {bit: name for name, bit in CAPABILITIES.items()}
    return {names.get(bit, str(bit)) for bit in range(64) if mask >> bit & 1}


def scrape(namespace: Namespace) -> tuple[dict[str, float], int]:
    """The metrics page, fetched with a request of known size from inside the namespace, and
    that size: the scrape is itself a connection gespann counts while it serves it."""
    request = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    with namespace.enter(), socket.create_connection(("127.0.0.1", PORT), timeout=10) as http:
        http.sendall(request)
        response = b"".join(iter(lambda: http.recv(1 << 16), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in body.decode().splitlines()
                                                       if line and not line.startswith("#"))}, len(request)


def wait_until_running(gespann: subprocess.Popen, timeout: float = 60) -> str:
    """gespann's start-up line, once logged (it serves by then): no HTTP, so no connection counted."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([gespann.stderr], [], [], max(deadline - time.monotonic(), 0))
        line = gespann.stderr.readline() if ready else ""
        if not line:
            break
        seen.append(line)
        if "running: probes" in line:
            return line
    gespann.kill()
    pytest.fail(f"gespann did not start (exit status {gespann.wait()}): {''.join(seen)}{gespann.stderr.read()}")


def stop(gespann: subprocess.Popen) -> str:
    if gespann.poll() is None:
        gespann.send_signal(signal.SIGTERM)
    return gespann.communicate(timeout=30)[1]


def refused_run(command: list[str]) -> str:
    """Run a gespann that must fail at start-up; its one error line, after checking the rest (log lines at
    INFO, such as a fallback taken on the way, are not errors)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("gespann: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("uid", IDENTITIES.values(), ids=IDENTITIES.keys())
def test_documented_capabilities_suffice(uid, namespace, write_config):
    """Starts, attaches, counts real traffic exactly (sock_diag included), stops cleanly."""
    config = write_config("scope: {netns: /proc/self/ns/net}\n")
    gespann = subprocess.Popen(gespann_command(config, uid, NEEDED_CAPABILITIES, namespace.path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = wait_until_running(gespann)
        assert f"prometheus http://127.0.0.1:{PORT}/metrics" in started
        assert effective_capabilities(gespann.pid) == set(NEEDED_CAPABILITIES)
        assert os.stat(f"/proc/{gespann.pid}").st_uid == uid
        held = held_by(gespann.pid)
        assert {kind for kind, _ in held} >= {"prog", "map"}
        with namespace.enter():
            traffic = TcpTraffic()
            for sent, replied in ((10, 20), (300, 4000), (0, 1)):
                traffic.exchange(sent, replied)
            refused(socket.AF_INET)
            client, server = traffic.connect()  # left open: its bytes come from sock_diag
            client.sendall(b"a" * 100)
            assert server.recv(100, socket.MSG_WAITALL) == b"a" * 100
            server.sendall(b"b" * 7)
            assert client.recv(7, socket.MSG_WAITALL) == b"b" * 7
        try:
            metrics, request = scrape(namespace)
        finally:
            client.close(), server.close(), traffic.close()
        # Four connections and the scrape's own, each seen from both ends; the scrape's request
        # has arrived (and is acked) when gespann collects, its response not yet sent.
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == 4 + 1
        assert metrics["gespann_total_connections"] == 8 + 2
        assert metrics["gespann_closed_connections_total"] == 6
        assert metrics['gespann_connections_failed_total{reason="refused"}'] == 1
        assert metrics["gespann_open_connections"] == 2 + 2
        assert metrics["gespann_bytes_sent_total"] == 4331 + 107 + request
        assert metrics["gespann_bytes_received_total"] == 4331 + 107 + request
    finally:
        err = stop(gespann)
    assert gespann.returncode == 0, err
    assert "Traceback" not in err and "running: probes" not in err  # the start-up line came once
    # The kernel frees a map after the programs using it, from a workqueue: give it a moment.
    assert held
    wait_for(lambda: not held & loaded(), timeout=10)
    assert not held & loaded(), "gespann left programs, maps or links loaded"


@pytest.mark.parametrize("uid", IDENTITIES.values(), ids=IDENTITIES.keys())
@pytest.mark.parametrize("missing", NEEDED_CAPABILITIES)
def test_each_missing_capability_is_named(missing, uid, namespace, write_config):
    config = write_config("scope: {netns: /proc/self/ns/net}\n")
    caps = [cap for cap in NEEDED_CAPABILITIES if cap != missing]
    line = refused_run(gespann_command(config, uid, caps, namespace.path))
    assert f"this process lacks {missing}" in line and "Operation not permitted" in line


def test_foreign_scope_netns_needs_sys_admin(namespace, write_config):
    """Dumping another namespace's sockets takes setns(), which CAP_SYS_ADMIN alone permits."""
    config = write_config(f"scope: {{netns: {namespace.path}}}\n")
    line = refused_run(gespann_command(config, NOBODY, NEEDED_CAPABILITIES))
    assert f"entering scope.netns {namespace.path}" in line and "this process lacks CAP_SYS_ADMIN" in line


def test_tracefs_that_cannot_be_mounted_is_named(namespace, write_config):
    """Without tracefs mounted, the tracepoint flavour would have gespann mount it: one line
    naming CAP_SYS_ADMIN, and the way around it (mount it beforehand, a volume in a container)."""
    config = write_config("attach: {mode: tracepoint}\nscope: {netns: /proc/self/ns/net}\n")
    unmount = ("for m in $(awk '$3 == \"tracefs\" || $3 == \"debugfs\" {print $2}' /proc/self/mounts); "
               "do umount -l \"$m\" || exit 3; done; exec \"$@\"")
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", unmount, "sh",
               *gespann_command(config, 0, NEEDED_CAPABILITIES, namespace.path)]
    line = refused_run(command)
    assert "mount -t tracefs nodev /sys/kernel/tracing" in line and "this process lacks CAP_SYS_ADMIN" in line
    assert "hostPath" in line


def test_root_only_tracefs_needs_dac_read_search_for_other_uids(namespace, write_config):
    """tracefs is root's: the tracepoint flavour as another uid fails naming CAP_DAC_READ_SEARCH,
    and starts once it is granted."""
    if not os.path.ismount("/sys/kernel/tracing"):
        pytest.skip("tracefs is not mounted on /sys/kernel/tracing here")
    if os.stat("/sys/kernel/tracing").st_mode & stat.S_IXOTH:
        pytest.skip("this host's tracefs is open to every uid")
    config = write_config("attach: {mode: tracepoint}\nscope: {netns: /proc/self/ns/net}\n")
    line = refused_run(gespann_command(config, NOBODY, NEEDED_CAPABILITIES, namespace.path))
    assert "/format: Permission denied" in line and "this process lacks CAP_DAC_READ_SEARCH" in line
    granted = (*NEEDED_CAPABILITIES, "CAP_DAC_READ_SEARCH")
    gespann = subprocess.Popen(gespann_command(config, NOBODY, granted, namespace.path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = wait_until_running(gespann)
    finally:
        err = stop(gespann)
    assert gespann.returncode == 0, err
    assert "tcp_lifecycle=tracepoint/" in started
