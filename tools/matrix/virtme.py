"""virtme-ng, in a virtualenv of its own, and the command line that boots a kernel with it.

virtme-ng boots a kernel with the host's root mounted read-only over 9p, so
the guest runs the project's own virtualenv and sources without an image to
build. It lives outside the project's virtualenv because it is a tool of the
test host, not a dependency of gespann; `vng` calls `virtme-run`, so its bin/
goes on PATH.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

#: The version the matrix was measured with; another is installed over it.
REQUIREMENT = "virtme-ng==1.42"


class VirtmeError(RuntimeError):
    """virtme-ng could not be installed."""


class VirtmeNg:
    """The virtme-ng installation in `venv`."""

    def __init__(self, venv: Path):
        self.venv = Path(venv)
        self.bin = self.venv / "bin"

    def ensure(self, say: Callable[[str], None]) -> None:
        """Create the virtualenv and install REQUIREMENT into it, unless that is done already."""
        wanted = REQUIREMENT.split("==")[1]
        if self.installed_version() == wanted:
            return
        say(f"installing {REQUIREMENT} into {self.venv}")
        if not (self.bin / "python").exists():
            _run([sys.executable, "-m", "venv", str(self.venv)], "create a virtualenv (Debian: python3-venv)")
        _run([str(self.bin / "python"), "-m", "pip", "install", "-q", REQUIREMENT], f"pip install {REQUIREMENT}")

    def installed_version(self) -> str | None:
        try:
            done = subprocess.run([str(self.bin / "vng"), "--version"], capture_output=True, text=True, timeout=60,
                                  check=False)
        except OSError:
            return None
        words = done.stdout.split()
        return words[-1] if done.returncode == 0 and words else None

    def env(self) -> dict[str, str]:
        return dict(os.environ, PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")

    def command(self, vmlinuz: Path, script: str, qemu_options: Sequence[str], *,
                memory: str, cpus: int, kvm: bool) -> list[str]:
        """Boot `vmlinuz`, run the shell `script` as root, power off; `qemu_options` go to qemu as they are.

        --verbose puts the kernel's log on the console, which is what explains a boot that fails.
        """
        return [
            str(self.bin / "vng"), "--verbose",
            "--run", str(vmlinuz),
            *([] if kvm else ["--disable-kvm"]),
            "--memory", memory, "--cpus", str(cpus),
            "--exec", script,
            *([f"--qemu-opts={' '.join(qemu_options)}"] if qemu_options else []),  # vng wants it last
        ]


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise VirtmeError(f"could not {what}:\n{(done.stderr or done.stdout).strip()}")
