"""Fixtures for kernel tests: a loopback TCP workload and the format of the tracepoint it fires.

Everything the tests load is named with the prefix `gt_`, so that what stays
loaded afterwards can be found with bpftool.
"""
import pytest
from loopback import Loopback

from gespann.bpf import tracefs


@pytest.fixture
def loopback():
    lo = Loopback()
    yield lo
    lo.close()


@pytest.fixture(scope="session")
def state_format():
    return tracefs.read_format("sock", "inet_sock_set_state")
