"""Which test files hold the tests to run: collected once on the host, so each guest imports only those.

A guest reads every file over 9p under software emulation, where importing a
test module costs seconds; collecting the whole tree to keep a quarter of it
would cost minutes per kernel. Markers do not depend on the kernel, so the
host's answer holds in every guest. Files, not test ids, go to the guest:
a parametrization may depend on the kernel it is collected on.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

_COLLECTOR = Path(__file__).with_name("collect_files.py")
_NO_TESTS_COLLECTED = 5  # pytest's exit status


class SelectionError(RuntimeError):
    """pytest could not collect the tests on the host."""


def files_with_tests(python: Path, repo: Path, tests: Sequence[str], pytest_args: Sequence[str]) -> list[str]:
    """The files in which pytest, run in `repo`, selects tests; relative to `repo` where inside it."""
    with tempfile.NamedTemporaryFile("r", prefix="kernel-matrix-", suffix=".files") as listing:
        done = subprocess.run([str(python), str(_COLLECTOR), listing.name, *tests, *pytest_args],
                              cwd=repo, capture_output=True, text=True, check=False)
        paths = listing.read().splitlines()
    if done.returncode == _NO_TESTS_COLLECTED:
        return []
    if done.returncode != 0:
        raise SelectionError(f"pytest --collect-only exited with status {done.returncode}:\n"
                             + "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:]))
    return [_relative(Path(p), repo) for p in paths]


def _relative(path: Path, repo: Path) -> str:
    return os.path.relpath(path, repo) if path.is_relative_to(repo) else str(path)
