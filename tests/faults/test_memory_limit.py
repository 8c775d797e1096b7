"""A memory limit too small for the maps the config asks for: `gespann run` says which limit in one line,
exits 2, and leaves nothing loaded. Since Linux 5.11 the kernel charges BPF maps to the memory cgroup of
the process creating them (RLIMIT_MEMLOCK before, which gespann lifts as root); the test runs gespann in a
memory cgroup of its own with a limit of 100 MiB and asks for 16 Mi UDP flows (an LRU map, allocated whole
when it is made: about 1.5 GiB)."""
import os
import subprocess
import sys

import pytest
from bpf_objects import newest_ids, unheld_since
from gespann_process import free_port
from loopback import wait_for
from memory_cgroup import LimitedMemoryCgroup

pytestmark = [pytest.mark.root, pytest.mark.process]

LIMIT = 100 << 20


def kernel_charges_memory_cgroup() -> bool:
    major, minor = (int(n) for n in os.uname().release.split(".")[:2])
    return (major, minor) >= (5, 11)


@pytest.fixture
def small_cgroup():
    try:
        cgroup = LimitedMemoryCgroup(LIMIT)
    except OSError as err:
        pytest.skip(f"no memory cgroup of the test's own can be made here: {err}")
    yield cgroup
    cgroup.remove()


@pytest.mark.skipif(not kernel_charges_memory_cgroup(), reason="kernels before 5.11 charge RLIMIT_MEMLOCK")
def test_maps_beyond_the_memory_cgroup_limit_are_one_line_naming_it_exit_2_and_nothing_left(tmp_path, small_cgroup):
    config = tmp_path / "gespann.yaml"
    config.write_text(f"exporters: [{{type: prometheus, settings: {{port: {free_port()}, address: 127.0.0.1}}}}]\n"
                      "limits: {udp_flows: 16777216}\n")
    before = newest_ids()
    result = subprocess.run([sys.executable, "-m", "gespann", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, preexec_fn=small_cgroup.move_in)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gespann: ")]
    assert len(errors) == 1, result.stderr
    assert "Cannot allocate memory (ENOMEM)" in errors[0]
    assert f"{small_cgroup.limit_file} allows 100.0 MiB" in errors[0], errors[0]
    assert "limits.udp_flows" in errors[0] and "udp_flows 16777216" in errors[0]
    assert "Traceback" not in result.stderr
    wait_for(lambda: not unheld_since(before), timeout=10)
    assert not unheld_since(before), "gespann left programs, maps or links loaded"
