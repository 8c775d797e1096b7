"""Running the test's own interpreter as another uid, for the least-privilege tests."""
from __future__ import annotations

import functools
import subprocess
import sys

import pytest


@functools.lru_cache(maxsize=None)
def _start_problem(uid: int) -> str | None:
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
                           "-c", "import encodings"], capture_output=True, text=True, timeout=60)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or [f"status {done.returncode}"])[-1]


def require_interpreter_usable_by(uid: int) -> None:
    """Skip, saying why, when this interpreter cannot even start as `uid`.

    An interpreter installed under a directory only root may read (pyenv's under
    /root, as the minimum-Python run uses) cannot; what these tests prove about
    capabilities is then proven by the run under the machine's own Python.
    """
    problem = _start_problem(uid)
    if problem is not None:
        pytest.skip(f"n/a: this interpreter ({sys.executable}) cannot start as uid {uid}: {problem}")
