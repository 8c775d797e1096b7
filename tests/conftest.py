"""Shared test set-up: tests marked `root` need root and a real kernel, and skip (saying so) without them."""
import os
import sys
from pathlib import Path

import pytest

# pytest put this directory on sys.path to import this file. Left there, tests/asm (a directory
# without __init__.py) would shadow the `asm` package as an empty namespace package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) on a real kernel; CI runs it as root")


@pytest.fixture(scope="session")
def running_kernel_tables(tmp_path_factory) -> Path:
    """A tables directory holding one table: the running kernel's, made now from its BTF."""
    from vendored_tables import make_running_kernel_table

    out = tmp_path_factory.mktemp("vendored_vmlinux")
    make_running_kernel_table(out)
    return out


@pytest.fixture
def vendored_tables_of_this_kernel(running_kernel_tables, monkeypatch) -> Path:
    """gespann reads vendored tables from `running_kernel_tables` (GESPANN_VENDORED_VMLINUX)."""
    from gespann.btf.vendored import TABLES_ENV

    monkeypatch.setenv(TABLES_ENV, str(running_kernel_tables))
    return running_kernel_tables


@pytest.fixture
def namespace():
    """A network namespace of the test's own (loopback up), removed afterwards."""
    from namespaces import Namespace

    ns = Namespace()
    yield ns
    ns.remove()
