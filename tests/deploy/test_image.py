"""The image `make image` builds: what it holds, who it runs as, and its size beside the peers'.

Read from the image itself (its root file system, mounted read-only by podman, and a container
of it), not from the build script's intentions.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from deploy.podman import Podman
from image.sizes import sizes, version_tag

pytestmark = pytest.mark.deploy(seconds=90)

#: Debian packages that compile, assemble or link code, kernel headers, and pip: none may be in the image.
FORBIDDEN_PACKAGE = re.compile(r"^(gcc|g\+\+|cpp|clang|lld|llvm)(-\d+)?$|^(binutils.*|libc6?-dev.*|linux-headers-.*"
                               r"|linux-kbuild-.*|libclang.*|libllvm.*|python3-pip(-whl)?|python3(\.\d+)?-(venv|dev))$")
#: Programs of the same kind, wherever a wheel could have put one.
FORBIDDEN_PROGRAM = re.compile(r"^(gcc|g\+\+|cc|c\+\+|cpp|clang|llc|ld|as|pip|pip3(\.\d+)?)$")


@pytest.fixture(scope="module")
def image_root():
    """The image's root file system, mounted read-only for the module."""
    tag = version_tag()
    if subprocess.run(["podman", "image", "exists", tag]).returncode != 0:
        pytest.fail(f"no image {tag}: `make image` builds it (make deploy-tests does so first)")
    root = subprocess.run(["podman", "image", "mount", tag], capture_output=True, text=True, check=True).stdout
    yield tag, Path(root.strip())
    subprocess.run(["podman", "image", "unmount", tag], capture_output=True, check=True)


def installed_packages(root: Path) -> list[str]:
    status = (root / "var/lib/dpkg/status").read_text()
    return [block.split("\n", 1)[0].removeprefix("Package: ") for block in status.split("\n\n")
            if block.startswith("Package: ") and "Status: install ok installed" in block]


def test_nothing_that_compiles_and_no_pip(image_root):
    tag, root = image_root
    packages = installed_packages(root)
    assert "python3" in packages and "python3-construct" in packages
    assert [p for p in packages if FORBIDDEN_PACKAGE.match(p)] == []
    programs = [p for d in ("usr/bin", "usr/sbin", "usr/local/bin", "opt/gespann/bin")
                for p in (root / d).iterdir() if FORBIDDEN_PROGRAM.match(p.name)]
    assert programs == []
    assert list(root.glob("usr/lib/python3*/**/pip/__init__.py")) == []
    assert list(root.glob("opt/gespann/lib/python3*/site-packages/pip")) == []
    assert not any((root / "usr/src").iterdir()) and not (root / "usr/lib/modules").exists()


def test_runs_gespann_as_an_unprivileged_user(image_root, tmp_path):
    tag, _ = image_root
    config = json.loads(subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True,
                                       check=True).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["gespann"] and config["User"] != "0" and not config["User"].startswith("0:")
    engine = Podman(tmp_path)
    try:
        identity = engine("run", "--rm", "--entrypoint", "id", tag, timeout=60).split()
        version = engine("run", "--rm", tag, "--version", timeout=60)
        # As that user, given the two capabilities (podman makes them ambient for a uid other than 0).
        unprivileged_run = engine("run", "--rm", "--cap-drop", "all", "--cap-add", "bpf,perfmon", "--read-only",
                                  "--entrypoint", "sh", tag, "-c", "timeout -s TERM 15 gespann run 2>&1",
                                  timeout=90, check=False)  # timeout(1) exits 124 once it has stopped gespann
    finally:
        engine.close()
    assert identity[0].startswith("uid=999(gespann)")
    assert version.strip() == f"gespann, version {tag.split(':')[1]}"
    assert "running: probes" in unprivileged_run and "stopping" in unprivileged_run, unprivileged_run


def test_smaller_than_either_peers_packages(image_root):
    tag, _ = image_root
    image, peers = sizes(tag)
    print(f"image {tag}: {image} bytes;", "; ".join(f"{p.package}: {p.installed_bytes} bytes in "
                                                    f"{p.packages_added} packages" for p in peers))
    assert all(image < peer.installed_bytes for peer in peers), (image, peers)
