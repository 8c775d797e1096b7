"""Container ids from cgroup ids: which container a connection's process ran in.

The kernel hands probes a cgroup-v2 id (bpf_get_current_cgroup_id), which is
the inode number of that cgroup's directory in the cgroup2 file system. The
directory's path is where container runtimes put the container id: a 64-hex
name such as `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>`,
`libpod-<id>.scope` or `/docker/<id>`. The tree is indexed once, and again
only when an unknown id shows up (new containers), at most once a second.
"""

from __future__ import annotations

import os
import re
import time
from typing import Optional

CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
RESCAN_INTERVAL = 1.0  # seconds: the least time between two walks of the tree


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        with open(mountinfo) as lines:
            for line in lines:
                fields = line.split()
                separator = fields.index("-")
                if fields[separator + 1] == "cgroup2":
                    return fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def container_id(path: str) -> str:
    """The last container id in a cgroup path, or "" when the path holds none."""
    found = CONTAINER_ID.findall(path)
    return found[-1] if found else ""


class Cgroups:
    """cgroup id -> path under the cgroup2 root ("/" for the root), and the container id in it."""

    def __init__(self, root: Optional[str] = None, *, clock=time.monotonic):
        self.root = root if root is not None else cgroup2_mount()
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._container_ids: dict[int, str] = {}  # a cgroup id is never reused: each is worked out once
        self._scanned_at: Optional[float] = None

    def path(self, cgroup_id: int) -> Optional[str]:
        if cgroup_id not in self._paths and self._may_rescan():
            self._scan()
        return self._paths.get(cgroup_id)

    def container_id(self, cgroup_id: int) -> str:
        found = self._container_ids.get(cgroup_id)
        if found is None:
            path = self.path(cgroup_id)
            if not path:
                return ""
            found = self._container_ids[cgroup_id] = container_id(path)
        return found

    def _may_rescan(self) -> bool:
        return self.root is not None and (self._scanned_at is None
                                          or self._clock() - self._scanned_at >= RESCAN_INTERVAL)

    def _scan(self) -> None:
        self._scanned_at = self._clock()
        paths = {}
        for directory, _, _ in os.walk(self.root):
            try:
                inode = os.stat(directory).st_ino
            except OSError:  # removed while walking
                continue
            relative = os.path.relpath(directory, self.root)
            paths[inode] = "/" if relative == "." else "/" + relative
        self._paths = paths
