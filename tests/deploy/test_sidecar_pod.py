"""deploy/kubernetes/sidecar.yaml played by Debian's podman, with the image `make image` built.

gespann runs in its own container of the pod, with exactly CAP_BPF and CAP_PERFMON, and counts
the connections of the pod's network namespace alone. The test sends HTTP requests from the host
to the pod's address and makes one refused connect from inside the pod's namespace, while traffic
on the host's loopback goes on beside; gespann's figures must equal the test client's own byte
counts and the pod namespace's kernel counters (/proc/net/snmp). `podman kube down` must leave
none of gespann's programs, maps or links loaded.

The manifest's application image (nginx, from a registry) is replaced: the test's `web`
container runs Python's HTTP server from gespann's own image, which is built from Debian
packages, as uid 0 to bind port 80. Everything else is the manifest as shipped.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from bpf_objects import held_by, loaded
from deploy.podman import Podman, wait_for
from pod_checks import capability_sets, scrape
from pyroute2 import netns
from tcp_traffic import TcpTraffic, refused

from gespann.check import NEEDED_CAPABILITIES

pytestmark = pytest.mark.deploy(seconds=240)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
HTTP_PORT, METRICS_PORT = 80, 9478
#: Request paths of different lengths, so that each connection's bytes differ.
PATHS = ["/", "/?" + "a" * 100, "/?" + "b" * 1000]
TCP_LISTEN, TCP_TIME_WAIT = 0x0A, 0x06


def manifest_with_test_application(tmp_path: Path) -> Path:
    """sidecar.yaml with the application container replaced (the module docstring says how)."""
    documents = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    gespann = next(c for c in containers if c["name"] == "gespann")
    web = next(c for c in containers if c["name"] == "web")
    assert web["ports"] == [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    web.update(image=gespann["image"], command=["python3", "-m", "http.server", "--bind", "0.0.0.0", str(HTTP_PORT)],
               workingDir="/usr/share/common-licenses", securityContext={"runAsUser": 0})
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def snmp_tcp(pid: int) -> dict[str, int]:
    """The Tcp counters of /proc/net/snmp in the network namespace of process `pid`."""
    header, values = [line for line in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
                      if line.startswith("Tcp:")]
    return dict(zip(header.split()[1:], map(int, values.split()[1:])))


def only_listeners_and_time_wait(pid: int) -> bool:
    """Every connection in the namespace of `pid` is over: what is left listens or waits in TIME_WAIT."""
    states = []
    for name in ("tcp", "tcp6"):
        states += [int(line.split()[3], 16) for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]]
    return all(state in (TCP_LISTEN, TCP_TIME_WAIT) for state in states)


def http_get(address: str, path: str) -> tuple[int, int]:
    """One HTTP/1.0 request to the pod: the bytes the client sent and received (until the server closed)."""
    request = f"GET {path} HTTP/1.0\r\nHost: web\r\n\r\n".encode()
    with socket.create_connection((address, HTTP_PORT), timeout=10) as http:
        http.sendall(request)
        response = b"".join(iter(lambda: http.recv(1 << 16), b""))
    assert response.startswith(b"HTTP/1.0 200"), response[:200]
    return len(request), len(response)


@pytest.fixture
def engine(tmp_path):
    podman = Podman(tmp_path)
    yield podman
    podman.close()


def test_sidecar_pod_counts_the_pods_traffic_exactly(engine, tmp_path):
    """Bound: 240 s (about 25 s here: play 5 s, start 5 s, traffic, down 10 s)."""
    manifest = manifest_with_test_application(tmp_path)
    started = time.monotonic()
    engine("kube", "play", str(manifest), timeout=120)
    try:
        played = time.monotonic() - started
        pod = engine.inspect("pod", "web-pod-0")
        containers = {c["Name"]: engine.inspect("container", c["Id"]) for c in pod["Containers"]}
        gespann_ctr = containers["web-pod-0-gespann"]
        infra = containers[next(name for name in containers if name.endswith("-infra"))]
        pid, infra_pid = gespann_ctr["State"]["Pid"], infra["State"]["Pid"]
        assert wait_for(lambda: "running: probes" in engine.logs(gespann_ctr["Id"]), timeout=60), \
            engine.logs(gespann_ctr["Id"])
        serving = time.monotonic() - started

        # Its own container, uid 0 with exactly the two capabilities, in the pod's network namespace.
        assert capability_sets(pid) == {"CapEff": set(NEEDED_CAPABILITIES), "CapPrm": set(NEEDED_CAPABILITIES)}
        assert os.stat(f"/proc/{pid}").st_uid == 0
        assert Path(f"/proc/{pid}/ns/mnt").resolve() != Path(f"/proc/{infra_pid}/ns/mnt").resolve()
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/proc/{infra_pid}/ns/net").st_ino
        assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        held = held_by(pid)
        assert {kind for kind, _ in held} >= {"prog", "map"}

        address = next(iter(infra["NetworkSettings"]["Networks"].values()))["IPAddress"]
        before = snmp_tcp(infra_pid)
        host = TcpTraffic()  # the host's loopback, outside the pod: none of it may count
        exchanges = []
        for path in PATHS:
            exchanges.append(http_get(address, path))
            host.exchange(1000, 2000)
        netns.pushns(f"/proc/{infra_pid}/ns/net")
        try:
            refused(socket.AF_INET)
        finally:
            netns.popns()
        host.close()
        assert wait_for(lambda: only_listeners_and_time_wait(infra_pid), timeout=10)
        metrics, scrape_request = scrape(address, METRICS_PORT)
        counted = {name: snmp_tcp(infra_pid)[name] - before[name] for name in before}

        sent = sum(request for request, _ in exchanges)
        received = sum(response for _, response in exchanges)
        shown = ('gespann_connections_opened_total{protocol="tcp",role="server"}',
                 'gespann_connections_opened_total{protocol="tcp",role="client"}',
                 'gespann_connections_failed_total{reason="refused"}', "gespann_total_connections",
                 "gespann_closed_connections_total", "gespann_open_connections",
                 "gespann_bytes_received_total", "gespann_bytes_sent_total")
        report = {"played s": round(played, 1), "serving s": round(serving, 1),
                  "http connections": len(exchanges), "client sent": sent, "client received": received,
                  "scrape request": scrape_request,
                  "snmp": {k: counted[k] for k in ("PassiveOpens", "ActiveOpens", "AttemptFails", "EstabResets")},
                  "gespann": {name: metrics[name] for name in shown}}
        print("sidecar pod:", json.dumps(report))
        # The oracles: the pod namespace's kernel counters, and the client's own byte counts.
        assert counted["PassiveOpens"] == len(PATHS) + 1  # the requests and the scrape
        assert counted["ActiveOpens"] == 1 and counted["AttemptFails"] == 1  # the refused connect
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="server"}'] == counted["PassiveOpens"]
        assert metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'] == 0
        assert metrics['gespann_connections_failed_total{reason="refused"}'] == counted["AttemptFails"]
        assert metrics["gespann_total_connections"] == len(PATHS) + 1
        assert metrics["gespann_closed_connections_total"] == len(PATHS)
        assert metrics["gespann_open_connections"] == 1
        assert metrics["gespann_bytes_received_total"] == sent + scrape_request
        assert metrics["gespann_bytes_sent_total"] == received
    finally:
        engine("kube", "down", str(manifest), timeout=120)
    # The kernel frees a map after the programs using it, from a workqueue: give it a moment.
    assert wait_for(lambda: not held & loaded(), timeout=10), "gespann left programs, maps or links loaded"
