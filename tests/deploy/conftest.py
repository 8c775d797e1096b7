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


@pytest.fixture(autouse=True)
def deployment_prerequisites_and_time_bound(request):
    marker = request.node.get_closest_marker("deploy")
    if marker is None:
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("needs root: podman's system image store, mmdebstrap's root mode, CAP_BPF for gespann")
    missing = [tool for tool in ("podman", "crun", "catatonit", "mmdebstrap", "bpftool")
               if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/libexec/podman") is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: tools/setup-host.sh deploy installs them")
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
