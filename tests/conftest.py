"""Shared test set-up: tests marked `root` need root and a real kernel, and skip (saying so) without them."""
import os
import sys

import pytest

# pytest put this directory on sys.path to import this file. Left there, tests/asm (a directory
# without __init__.py) would shadow the `asm` package as an empty namespace package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) on a real kernel; CI runs it as root")
