"""The deployment files (deploy/) against the one documented capability set, without a kernel.

`gespann.check.NEEDED_CAPABILITIES` is the set tests/cli/test_least_privilege.py proves
sufficient and necessary; the systemd unit, every Kubernetes container running gespann and
docs/deployment.md must grant exactly it, and every embedded config must be one
gespann accepts, serving on the port the scrape annotations name.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gespann import config as gespann_config
from gespann.check import NEEDED_CAPABILITIES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "gespann.service"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CONFIG_PATH = "/etc/gespann/config.yaml"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a systemd unit (keys may repeat; comments and sections dropped)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_templates() -> list[tuple[str, dict]]:
    return [(f"{name}:{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"])
            for name, doc in documents() if doc["kind"] in ("DaemonSet", "Deployment")]


def gespann_containers(template: dict) -> list[dict]:
    return [c for c in template["spec"]["containers"] if c["image"].startswith("gespann:")]


def config_maps(manifest: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc
            for name, doc in documents() if name == manifest and doc["kind"] == "ConfigMap"}


def test_there_is_a_daemonset_and_a_sidecar():
    kinds = {name: [doc["kind"] for n, doc in documents() if n == name] for name in (p.name for p in MANIFESTS)}
    assert "DaemonSet" in kinds["daemonset.yaml"] and "Deployment" in kinds["sidecar.yaml"]
    assert all(gespann_containers(template) for _, template in pod_templates())


def test_gespann_image_is_the_one_make_image_tags():
    """`make image` tags gespann:VERSION, VERSION being pyproject.toml's (tools/image/build.sh)."""
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    images = {c["image"] for _, template in pod_templates() for c in gespann_containers(template)}
    assert images == {f"gespann:{version}"}


def test_systemd_unit_grants_exactly_the_documented_capabilities():
    settings = unit_settings(UNIT)
    assert settings["AmbientCapabilities"] == [" ".join(NEEDED_CAPABILITIES)]
    assert settings["CapabilityBoundingSet"] == [" ".join(NEEDED_CAPABILITIES)]
    assert settings["ExecStart"][0].endswith(f"/gespann run --config {CONFIG_PATH}")
    assert settings["NoNewPrivileges"] == ["yes"] and settings["DynamicUser"] == ["yes"]
    assert settings["Restart"] == ["on-failure"] and "2" in settings["RestartPreventExitStatus"][0].split()
    # What would break BPF or sock_diag must stay unset.
    assert not {"PrivateUsers", "PrivateNetwork", "ProcSubset"} & settings.keys()
    allowed, *denials = settings["SystemCallFilter"]
    assert {"bpf", "perf_event_open"} <= set(allowed.split()) and not allowed.startswith("~")
    denied = {name.lstrip("~") for denial in denials for name in denial.split()}
    assert all(denial.startswith("~") for denial in denials)
    assert not denied & {"bpf", "perf_event_open", "@privileged", "@debug"}, "a denial takes gespann's calls away"
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    """systemd's own check; ExecStart points at this checkout's gespann, as verify wants it to exist."""
    gespann = shutil.which("gespann") or str(Path(__file__).resolve().parents[2] / ".venv/bin/gespann")
    unit = tmp_path / "gespann.service"
    unit.write_text(UNIT.read_text().replace("/opt/gespann/bin/gespann", gespann))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("where, template", pod_templates(), ids=[w for w, _ in pod_templates()])
def test_containers_grant_exactly_the_documented_capabilities(where, template):
    for container in gespann_containers(template):
        security = container["securityContext"]
        assert security["capabilities"] == {"drop": ["ALL"],
                                            "add": [c.removeprefix("CAP_") for c in NEEDED_CAPABILITIES]}
        assert security["privileged"] is False and security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsUser"] == 0  # Kubernetes gives a non-root uid no ambient capabilities
        assert container["args"] == ["run", "--config", CONFIG_PATH]
    assert template["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert template["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("where, template", pod_templates(), ids=[w for w, _ in pod_templates()])
def test_host_paths_are_read_only_and_few(where, template):
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    host_paths = {name: v["hostPath"]["path"] for name, v in volumes.items() if "hostPath" in v}
    assert set(host_paths.values()) <= {"/sys/kernel/tracing"}  # no /sys/fs/bpf: gespann pins nothing
    for container in template["spec"]["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["name"] in host_paths:
                assert mount.get("readOnly") is True and mount["mountPath"] == host_paths[mount["name"]]


@pytest.mark.parametrize("where, template", pod_templates(), ids=[w for w, _ in pod_templates()])
def test_embedded_config_is_valid_and_scraped_where_served(where, template):
    manifest = where.split(":")[0]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    for container in gespann_containers(template):
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent))
        config_map = config_maps(manifest)[volumes[mount["name"]]["configMap"]["name"]]
        config = gespann_config.parse(yaml.safe_load(config_map["data"][Path(CONFIG_PATH).name]))
        port = int(next(a.settings["port"] for a in config.exporters if a.type == "prometheus"))
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        if template["spec"].get("hostNetwork"):
            assert config.netns is None  # the node's namespace, every connection on the node
        else:
            assert config.netns == "/proc/self/ns/net"  # the pod's own: no setns, no CAP_SYS_ADMIN


def test_daemonset_watches_the_node_and_the_sidecar_its_pod():
    templates = dict(pod_templates())
    assert templates["daemonset.yaml:DaemonSet/gespann"]["spec"]["hostNetwork"] is True
    assert "hostNetwork" not in templates["sidecar.yaml:Deployment/web"]["spec"]


def test_example_config_is_valid():
    config = gespann_config.load(DEPLOY / "config.yaml")
    assert config.netns is None and [a.type for a in config.exporters] == ["prometheus"]


def test_the_deployment_doc_documents_the_same_set():
    section = (ROOT / "docs" / "deployment.md").read_text()
    assert f"`{' + '.join(NEEDED_CAPABILITIES)}`" in section
    for path in (UNIT, *MANIFESTS):
        assert str(path.relative_to(ROOT)) in section


def test_the_deployment_doc_installs_the_unit_with_the_lines_of_its_header():
    """tests/deploy/test_systemd_unit.py runs the header's lines; docs/deployment.md must show the same."""
    from systemd_machine import unit_install_lines

    readme = (ROOT / "docs" / "deployment.md").read_text()
    lines = unit_install_lines(UNIT)
    assert lines and f"```sh\n{chr(10).join(lines)}\n```" in readme
