"""deploy/systemd/gespann.service under a real systemd: Debian 12 booted in systemd-nspawn, gespann installed
by the very lines of the unit's header comment, then started, scraped, stopped and given a bad config.

It counts real loopback traffic made inside the container against the kernel's own counters of the
container's network namespace (/proc/net/snmp); the service's process holds exactly CAP_BPF and
CAP_PERFMON; stopping it unloads every BPF object it held; a bad config fails it once, with exit status 2,
without a restart; it serves TLS to clients with a certificate, its root-only key handed over by
LoadCredential=; `systemd-analyze security` rates it as docs/deployment.md says.

It builds a root file system (25 to 75 s here; Debian packages, and gespann's dependencies from PyPI), so it
runs in `make deploy-systemd`, after the suite, not in a plain `pytest` run; it needs root.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import mib
import pytest
import throwaway_certs
import yaml
from bpf_objects import held_by, loaded
from loopback import wait_for
from systemd_machine import (
    REPO,
    SETUP_HINT,
    Machine,
    build_rootfs,
    copy_checkout,
    missing_commands,
    run_unbooted,
    unit_install_lines,
)

from gespann.bpf.errors import CAPABILITIES
from gespann.check import NEEDED_CAPABILITIES

#: `make deploy-systemd` sets it; without it, the module is skipped.
RUN_BY = "GESPANN_DEPLOY_SYSTEMD"
UNIT = REPO / "deploy" / "systemd" / "gespann.service"
SERVICE = "gespann.service"
CONFIG_INSIDE = "/etc/gespann/config.yaml"
PORT = 9478  # deploy/config.yaml's
SYSTEM_CALLS = ("bpf", "perf_event_open")  # nspawn's default filter leaves both out
#: Exchanges made inside the container: (bytes the client sends, bytes the server replies).
EXCHANGES = ((10, 20), (300, 4000), (0, 1), (65536, 7), (1, 0))

pytestmark = [
    pytest.mark.root, pytest.mark.process,
    pytest.mark.skipif(os.environ.get(RUN_BY) != "1",
                       reason=f"boots a container (about two minutes): `make deploy-systemd` runs it, after the suite "
                              f"({RUN_BY}=1)"),
]


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: it builds a root file system and boots it with systemd-nspawn")
    if missing_commands():
        pytest.fail(f"missing {', '.join(missing_commands())}: {SETUP_HINT}")
    work = tmp_path_factory.mktemp("systemd")
    root = work / "rootfs"
    times = {}
    booted = None
    try:
        started = time.monotonic()
        build_rootfs(root)
        times["rootfs build"] = time.monotonic() - started

        started = time.monotonic()
        checkout = copy_checkout(root)
        lines = unit_install_lines(UNIT)
        before_boot = [line for line in lines if not line.startswith("systemctl ")]
        after_boot = [line for line in lines if line.startswith("systemctl ")]
        assert before_boot and after_boot, lines
        run_unbooted(root, "\n".join(before_boot), cwd=checkout)
        times["install (venv, pip)"] = time.monotonic() - started
        # The one change to deploy/config.yaml: count only the container's own network namespace.
        config = root / CONFIG_INSIDE.lstrip("/")
        config.write_text(config.read_text() + "scope: {netns: /proc/self/ns/net}\n")

        booted = Machine(root, work / "console.log", NEEDED_CAPABILITIES, SYSTEM_CALLS)
        times["boot"] = booted.boot_seconds
        started = time.monotonic()
        for line in after_boot:
            booted.run("/bin/sh", "-ec", line)
        wait_until_running(booted)
        times["enable --now until gespann runs"] = time.monotonic() - started
        print("\nsystemd deployment: " + ", ".join(f"{what} {seconds:.1f} s" for what, seconds in times.items())
              + f"; systemd state after boot: {booted.state_after_boot}", file=sys.stderr)
        yield booted
    finally:
        if booted is not None:
            booted.poweroff()
        shutil.rmtree(work, ignore_errors=True)


def wait_until_running(machine: Machine, timeout: float = 60) -> int:
    """The service's main PID once gespann has logged its start-up line (it serves by then); no HTTP, so
    no connection is made for it."""
    machine.wait_for(lambda: "running: probes" in machine.journal(SERVICE) or
                     machine.show(SERVICE, "ActiveState")["ActiveState"] == "failed",
                     "gespann's start-up line", timeout)
    state = machine.show(SERVICE, "ActiveState", "MainPID")
    assert state["ActiveState"] == "active", machine.journal(SERVICE)
    return int(state["MainPID"])


def start(machine: Machine) -> int:
    machine.run("systemctl", "reset-failed", SERVICE, check=False)
    machine.run("systemctl", "start", SERVICE)
    return wait_until_running(machine)


SCRAPE = r"""
import json, socket, sys
request = b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as http:
    http.sendall(request)
    response = b"".join(iter(lambda: http.recv(1 << 16), b""))
print(json.dumps({"request": len(request), "response": len(response), "text": response.decode()}))
"""

TRAFFIC = r"""
import json, socket, sys
listener = socket.create_server(("127.0.0.1", 0))
for sent, replied in json.loads(sys.argv[1]):
    client = socket.create_connection(listener.getsockname(), timeout=10)
    server, _ = listener.accept()
    client.sendall(b"q" * sent)
    assert server.recv(sent, socket.MSG_WAITALL) == b"q" * sent
    server.sendall(b"r" * replied)
    assert client.recv(replied, socket.MSG_WAITALL) == b"r" * replied
    client.close()
    assert server.recv(1) == b""  # the client's FIN is in: an orderly close on both sides
    server.close()
closed = socket.socket()
closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect to it is refused
try:
    socket.create_connection(closed.getsockname(), timeout=10)
    sys.exit("a connect to a port without a listener was accepted")
except ConnectionRefusedError:
    pass
"""


def scrape(machine: Machine) -> tuple[dict[str, float], int, int]:
    """The metrics page fetched from inside the container, and the sizes of the request and the response:
    the scrape is itself a connection gespann counts while it serves it."""
    out = json.loads(machine.run("python3", "-c", SCRAPE, str(PORT)).stdout)
    head, _, body = out["text"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.0 200"), head
    metrics = {name: float(value) for name, _, value in (line.rpartition(" ") for line in body.splitlines()
                                                          if line and not line.startswith("#"))}
    return metrics, out["request"], out["response"]


def capability_sets(pid: int) -> dict[str, set[str]]:
    """CapInh, CapPrm, CapEff, CapBnd, CapAmb of a process, by capability name (an unnamed bit by number)."""
    names = {bit: name for name, bit in CAPABILITIES.items()}
    sets = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cap"):
            key, mask = line.split(":")
            sets[key] = {names.get(bit, str(bit)) for bit in range(64) if int(mask, 16) >> bit & 1}
    return sets


def test_the_started_unit_counts_the_containers_traffic_with_exactly_two_capabilities_and_stop_unloads_it(machine):
    active = machine.show(SERVICE, "ActiveState")["ActiveState"] == "active"  # enabled and started by the fixture
    pid = wait_until_running(machine) if active else start(machine)
    host_pid = machine.host_pid(pid)
    caps = capability_sets(host_pid)
    for name in ("CapPrm", "CapEff", "CapAmb", "CapInh", "CapBnd"):
        assert caps[name] == set(NEEDED_CAPABILITIES), (name, caps)
    status = Path(f"/proc/{host_pid}/status").read_text()
    assert re.search(r"^Uid:\t(\d+)", status, re.M).group(1) != "0"  # DynamicUser=
    assert re.search(r"^NoNewPrivs:\t1$", status, re.M)
    held = held_by(host_pid)
    assert {kind for kind, _ in held} >= {"prog", "map"}, held

    first, _, first_response = scrape(machine)
    before = mib.counters(machine.proc_net)["Tcp"]
    machine.run("python3", "-c", TRAFFIC, json.dumps(EXCHANGES))
    after = mib.counters(machine.proc_net)["Tcp"]
    second, second_request, _ = scrape(machine)

    opened = {name: after[name] - before[name] for name in ("ActiveOpens", "PassiveOpens", "AttemptFails")}
    assert opened == {"ActiveOpens": len(EXCHANGES) + 1, "PassiveOpens": len(EXCHANGES), "AttemptFails": 1}
    counted = {name: second.get(name, 0) - first.get(name, 0) for name in second}
    # The traffic's connections, and the second scrape's own (established when gespann collects).
    client = 'gespann_connections_opened_total{protocol="tcp",role="client"}'
    server = 'gespann_connections_opened_total{protocol="tcp",role="server"}'
    assert counted[client] == opened["ActiveOpens"] - opened["AttemptFails"] + 1
    assert counted[server] == opened["PassiveOpens"] + 1
    refused = 'gespann_connections_failed_total{reason="refused"}'
    assert counted[refused] == opened["AttemptFails"]
    # The traffic's payload, the first scrape's response (sent after it collected) and the second's request.
    payload = sum(sent + replied for sent, replied in EXCHANGES)
    assert counted["gespann_bytes_sent_total"] == payload + first_response + second_request
    assert counted["gespann_bytes_received_total"] == payload + first_response + second_request
    print(f"\nsystemd deployment, traffic: the test made {len(EXCHANGES)} connections and 1 refused connect with "
          f"{payload} payload bytes; the kernel counted {opened}; gespann counted {counted[client]:.0f} client and "
          f"{counted[server]:.0f} server opens (each with the second scrape's own), {counted[refused]:.0f} refused, "
          f"{counted['gespann_bytes_sent_total']:.0f} bytes sent and {counted['gespann_bytes_received_total']:.0f} "
          f"received (= {payload} + {first_response} + {second_request}, the scrapes')", file=sys.stderr)

    machine.run("systemctl", "stop", SERVICE, timeout=60)
    state = machine.show(SERVICE, "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state
    wait_for(lambda: not held & loaded(), timeout=10)  # maps are freed after their programs, from a workqueue
    assert not held & loaded(), "the stopped service left programs, maps or links loaded"


TLS_SCRAPE = r"""
import socket, ssl, sys
tls = "/etc/gespann/tls/"
context = ssl.create_default_context(cafile=tls + "ca.crt")
if sys.argv[2] == "with-certificate":
    context.load_cert_chain(tls + "client.crt", tls + "client.key")
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as http:
            http.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            response = b"".join(iter(lambda: http.recv(1 << 16), b""))
except (ssl.SSLError, ConnectionError) as err:  # the alert, or the server closing first
    print("refused:", err)
else:
    print(response.decode().partition("\r\n")[0], "gespann_total_connections" in response.decode())
"""
CREDENTIALS = "/run/credentials/gespann.service/"


def test_tls_with_a_root_only_key_the_service_reads_as_a_credential(machine, tmp_path):
    """README's recipe: the key stays root's (0600); LoadCredential= hands the dynamic user a copy."""
    if throwaway_certs.OPENSSL is None:
        pytest.fail(throwaway_certs.SKIP_REASON)
    certs = throwaway_certs.make(tmp_path)
    tls = machine.root / "etc/gespann/tls"
    tls.mkdir(mode=0o700)
    for name, path in {"server.crt": certs.server.cert, "server.key": certs.server.key, "ca.crt": certs.ca.cert,
                       "client.crt": certs.client.cert, "client.key": certs.client.key}.items():
        shutil.copyfile(path, tls / name)
        (tls / name).chmod(0o600)
    drop_in = machine.root / "etc/systemd/system/gespann.service.d/tls.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("[Service]\n" + "".join(f"LoadCredential={name}:/etc/gespann/tls/{name}\n"
                                                for name in ("server.crt", "server.key", "ca.crt")))
    config = machine.root / CONFIG_INSIDE.lstrip("/")
    good = config.read_text()
    settings = yaml.safe_load(good)
    settings["exporters"][0]["settings"].update(cert_file=CREDENTIALS + "server.crt",
                                                key_file=CREDENTIALS + "server.key",
                                                client_ca_file=CREDENTIALS + "ca.crt")
    config.write_text(yaml.safe_dump(settings))
    try:
        machine.run("systemctl", "daemon-reload")
        start(machine)
        with_certificate = machine.run("python3", "-c", TLS_SCRAPE, str(PORT), "with-certificate").stdout
        without = machine.run("python3", "-c", TLS_SCRAPE, str(PORT), "without").stdout
        assert with_certificate.strip() == "HTTP/1.0 200 OK True", with_certificate
        assert without.startswith("refused: "), without  # the alert "certificate required", or the server's EOF
        print(f"\nsystemd deployment, TLS: with a client certificate: {with_certificate.strip()!r}; "
              f"without: {without.strip()!r}", file=sys.stderr)
    finally:
        machine.run("systemctl", "stop", SERVICE)
        config.write_text(good)
        shutil.rmtree(drop_in.parent)
        shutil.rmtree(tls)
        machine.run("systemctl", "daemon-reload")


BAD_CONFIGS = {
    "port-out-of-range": ("exporters:\n  - type: prometheus\n    settings: {port: 99999}\n",
                          "exporters[0].settings.port: port must be between 1 and 65535, got 99999"),
    # Root's, mode 0640: the dynamic user cannot read it, though root, who wrote the config, can.
    "unreadable-certificate": ("exporters:\n  - type: prometheus\n"
                               "    settings: {cert_file: /etc/shadow, key_file: /etc/shadow}\n",
                               "exporters[0].settings.cert_file: cannot read '/etc/shadow': Permission denied"),
    "tls-key-without-cert": ("exporters:\n  - type: prometheus\n    settings: {key_file: /etc/gespann/config.yaml}\n",
                             "exporters[0].settings.key_file: given without cert_file"),
}


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=BAD_CONFIGS)
def test_a_bad_config_fails_the_unit_with_status_2_without_a_restart(machine, bad):
    text, message = BAD_CONFIGS[bad]
    config = machine.root / CONFIG_INSIDE.lstrip("/")
    good = config.read_text()
    machine.run("systemctl", "stop", SERVICE)
    machine.run("systemctl", "reset-failed", SERVICE, check=False)
    config.write_text(text)
    try:
        machine.run("systemctl", "start", SERVICE)  # Type=exec: started once gespann is executed
        machine.wait_for(lambda: machine.show(SERVICE, "ActiveState")["ActiveState"] == "failed", "the failure")
        restart_seconds = int(re.search(r"^RestartSec=(\d+)s$", UNIT.read_text(), re.M).group(1))
        time.sleep(restart_seconds + 2)  # a restart would have been scheduled by now
        state = machine.show(SERVICE, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
        assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "2", "NRestarts": "0"}, \
            (state, machine.journal(SERVICE))
        machine.wait_for(lambda: f"gespann: config: {message}" in machine.journal(SERVICE), "the error in the journal")
    finally:
        config.write_text(good)
        machine.run("systemctl", "reset-failed", SERVICE, check=False)


def test_systemd_analyze_security_rates_the_unit_as_the_docs_say(machine):
    out = machine.run("systemd-analyze", "security", SERVICE, "--no-pager", check=False).stdout
    score = re.search(r"Overall exposure level for gespann\.service: (\d+\.\d+) (\w+)", out)
    assert score, out
    documented = re.search(r"`systemd-analyze security gespann\.service` rates its exposure (\d+\.\d+) \((\w+)\)",
                           (REPO / "docs" / "deployment.md").read_text())
    assert documented, f"docs/deployment.md does not give the unit's systemd-analyze security score, {score.group(1)}"
    assert score.groups() == documented.groups(), \
        f"measured {score.groups()}, docs/deployment.md says {documented.groups()}"
    print(f"\nsystemd-analyze security gespann.service: {score.group(1)} {score.group(2)}", file=sys.stderr)
