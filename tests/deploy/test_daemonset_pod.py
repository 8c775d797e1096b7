"""deploy/kubernetes/daemonset.yaml's pod, played by Debian's podman with the image `make image` built.

Podman 4.3 cannot play a DaemonSet (`kube play` skips the kind, then refuses the ConfigMap left
alone), nor a Namespace: the test plays the DaemonSet's pod template as a Pod, with its ConfigMap,
as the one pod a DaemonSet would start on this node, without the container's `ports` (podman 4.3
makes a port mapping of each, and refuses mappings on the host's network). gespann then runs in the node's network
namespace with the host's tracefs mounted read-only, with exactly CAP_BPF and CAP_PERFMON, and
watches every connection of the node. The node is shared with whatever else runs on it, so its
totals cannot be compared exactly; what the test makes in a network namespace of its own must
show up in full (a lower bound), and `podman kube down` must leave nothing of gespann's loaded.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import yaml
from bpf_objects import held_by, loaded
from deploy.podman import Podman, wait_for
from pod_checks import capability_sets, scrape
from tcp_traffic import TcpTraffic, refused

from gespann.check import NEEDED_CAPABILITIES

pytestmark = pytest.mark.deploy(seconds=240)

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "daemonset.yaml"
POD = "gespann-node"
METRICS_PORT = 9478
#: (bytes the client sends, bytes the server replies) per connection.
EXCHANGES = [(10, 20), (300, 4000), (70000, 1)]


def daemonset_pod_manifest(tmp_path: Path) -> Path:
    """The DaemonSet's pod template as a Pod named POD, beside the ConfigMap it mounts."""
    documents = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    template = next(doc for doc in documents if doc["kind"] == "DaemonSet")["spec"]["template"]
    config_maps = [{**doc, "metadata": {"name": doc["metadata"]["name"]}} for doc in documents
                   if doc["kind"] == "ConfigMap"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": POD},
           "spec": template["spec"]}
    for container in pod["spec"]["containers"]:
        # Podman 4.3 turns containerPort into a port mapping, which it refuses on the host's network;
        # there the port is the host's anyway.
        assert container.pop("ports") == [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    path = tmp_path / "daemonset-pod.yaml"
    path.write_text(yaml.safe_dump_all([*config_maps, pod]))
    return path


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def counters(metrics: dict[str, float]) -> dict[str, float]:
    return {"client": metrics['gespann_connections_opened_total{protocol="tcp",role="client"}'],
            "server": metrics['gespann_connections_opened_total{protocol="tcp",role="server"}'],
            "refused": metrics['gespann_connections_failed_total{reason="refused"}'],
            "sent": metrics["gespann_bytes_sent_total"], "received": metrics["gespann_bytes_received_total"]}


@pytest.fixture
def engine(tmp_path):
    podman = Podman(tmp_path)
    yield podman
    podman.close()


def test_daemonset_pod_watches_the_node(engine, tmp_path, namespace):
    """Bound: 240 s (about 10 s here)."""
    if not port_is_free(METRICS_PORT):
        pytest.fail(f"port {METRICS_PORT} of this host is taken: the DaemonSet's pod serves there (hostNetwork)")
    manifest = daemonset_pod_manifest(tmp_path)
    engine("kube", "play", str(manifest), timeout=120)
    try:
        gespann_ctr = engine.inspect("container", f"{POD}-gespann")
        pid = gespann_ctr["State"]["Pid"]
        assert wait_for(lambda: "running: probes" in engine.logs(gespann_ctr["Id"]), timeout=60), \
            engine.logs(gespann_ctr["Id"])

        assert capability_sets(pid) == {"CapEff": set(NEEDED_CAPABILITIES), "CapPrm": set(NEEDED_CAPABILITIES)}
        assert os.stat(f"/proc/{pid}").st_uid == 0
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino  # the node's
        mounts = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
        tracing = next(fields for fields in mounts if fields[4] == "/sys/kernel/tracing")
        assert "ro" in tracing[5].split(",")
        held = held_by(pid)
        assert {kind for kind, _ in held} >= {"prog", "map"}

        before, _ = scrape("127.0.0.1", METRICS_PORT)
        with namespace.enter():
            traffic = TcpTraffic()
            for sent, replied in EXCHANGES:
                traffic.exchange(sent, replied)
            refused(socket.AF_INET)
            traffic.close()
        after, _ = scrape("127.0.0.1", METRICS_PORT)
        grown = {name: counters(after)[name] - value for name, value in counters(before).items()}
        made = {"client": len(EXCHANGES), "server": len(EXCHANGES), "refused": 1,
                "sent": sum(s + r for s, r in EXCHANGES), "received": sum(s + r for s, r in EXCHANGES)}
        print("daemonset pod:", json.dumps({"made in the test's namespace": made, "gespann's totals grew by": grown}))
        assert all(grown[name] >= made[name] for name in made), (grown, made)
    finally:
        engine("kube", "down", str(manifest), timeout=120)
    assert wait_for(lambda: not held & loaded(), timeout=10), "gespann left programs, maps or links loaded"
