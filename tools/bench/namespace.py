"""The network namespace the workload runs in, made by the bench and removed after.

Other engineers' tests make loopback connections on this machine at the same
time; inside a namespace of its own, with gespann scoped to it (and the
bpftrace script filtering the same way), every connection counted is one the
load generator made, so the counts can be checked exactly.
"""
from __future__ import annotations

import os
import subprocess
import uuid

#: Wider than the default 32768-60999, so repeated runs of tens of thousands of connections
#: do not wait for TIME_WAIT ports.
PORT_RANGE = "10000 65000"


class Namespace:
    def __init__(self):
        self.name = f"gespann-bench-{uuid.uuid4().hex[:8]}"
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            subprocess.run([*self.exec_prefix, "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORT_RANGE}"],
                           check=True, capture_output=True)
        except BaseException:
            self.remove()
            raise

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)
