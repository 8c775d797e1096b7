"""Whether the suite runs in one of the kernel matrix's VMs, under software emulation, and traffic sized for it.

Python and the kernel run there several times slower than on the host, and a
kernel has 900 s for its whole run (tools/kernel_matrix.py). A test whose
point is exactness over many events (a thousand failing connects, tens of
thousands of flows) then runs on fewer: every figure is still checked
exactly, against the same oracle, on each event it makes.
"""
import os

#: Set by the matrix's runner in a VM's environment (tools/matrix/runner.py).
EMULATED = os.environ.get("GESPANN_TEST_EMULATED") == "1"


def scaled(count: int, emulated: int) -> int:
    """`count` events on the host, `emulated` in a VM (at most `count`)."""
    return min(count, emulated) if EMULATED else count
