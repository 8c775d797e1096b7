"""A memory cgroup of the test's own, below the one the test runs in, with a small limit: where the kernel
(5.11+) charges the BPF maps of a process the test starts in it. cgroup v2 (memory.max) or v1
(memory.limit_in_bytes), whichever holds this process's memory controller."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Optional

ROOT = Path("/sys/fs/cgroup")


def _own_memory_cgroup() -> Optional[tuple[Path, str]]:
    """(directory, limit file) of this process's memory cgroup, if it has one it may make children in."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidate = ROOT / path.lstrip("/")
            control = candidate / "cgroup.subtree_control"
            if control.exists() and "memory" in control.read_text().split():
                return candidate, "memory.max"
        elif "memory" in controllers.split(","):
            return ROOT / "memory" / path.lstrip("/"), "memory.limit_in_bytes"
    return None


class LimitedMemoryCgroup:
    """A fresh child cgroup with `limit_bytes` of memory; `move_in` is a preexec_fn that puts the child
    process in it. Making it raises OSError where no such cgroup can be made."""

    def __init__(self, limit_bytes: int):
        found = _own_memory_cgroup()
        if found is None:
            raise OSError("no memory cgroup controller for this process")
        parent, limit_name = found
        self.group = parent / f"gespann-test-{uuid.uuid4().hex[:8]}"
        self.group.mkdir()
        self.limit_file = self.group / limit_name
        try:
            self.limit_file.write_text(str(limit_bytes))
        except OSError:
            self.remove()
            raise
        self._procs = str(self.group / "cgroup.procs")

    def move_in(self) -> None:
        with open(self._procs, "w") as procs:
            procs.write(str(os.getpid()))

    def remove(self) -> None:
        """Once its processes have exited: rmdir fails while an exited one is still being reaped."""
        for _ in range(100):
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.05)
