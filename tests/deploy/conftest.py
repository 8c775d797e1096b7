"""The deployment tests: gespann's image, and its manifests under a real container engine.

They are marked `deploy`, which the default run deselects (pyproject.toml's addopts); `make
deploy-tests` (part of `make test`, after the suite) installs what they use, builds the image and
runs them with `-m deploy`. Each states its time bound, `@pytest.mark.deploy(seconds=N)`, and
fails when it runs longer.
"""
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))


class TimeBoundExceeded(Exception):
    """A deployment test ran past the bound its marker states."""


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a deployment test (module-scoped ones included): root and the tools, or a skip."""
    if item.get_closest_marker("deploy") is None:
        return
    if os.geteuid() != 0:
        pytest.skip("needs root: podman's system image store, mmdebstrap's root mode, CAP_BPF for gespann")
    search = os.environ.get("PATH", "") + ":/usr/sbin:/usr/libexec/podman"
    missing = [tool for tool in ("podman", "crun", "catatonit", "mmdebstrap", "bpftool")
               if shutil.which(tool, path=search) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: tools/setup-host.sh deploy installs them")


@pytest.fixture(autouse=True)
def time_bound(request):
    """Fails a deployment test that runs past the bound its `deploy(seconds=N)` marker states."""
    marker = request.node.get_closest_marker("deploy")
    if marker is None:
        yield
        return
    seconds = marker.kwargs["seconds"]

    def exceeded(signum, frame):
        raise TimeBoundExceeded(f"{request.node.name} ran longer than its bound of {seconds} s")

    previous = signal.signal(signal.SIGALRM, exceeded)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
