"""Shared test set-up: tests marked `root` need root and a real kernel, and skip (saying so) without them."""
import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) on a real kernel; CI runs it as root")
