"""Debian's podman (4.3, with crun) set up for this machine without changing its configuration.

Three things stand between that podman and a running pod here, each handled inside the engine:

- **cgroups.** The machine mounts cgroup v1 controllers and, beside them, a v2 hierarchy at
  /sys/fs/cgroup/unified that holds a controller of its own. crun refuses such a "hybrid" host.
  Every podman command runs in a mount namespace of the engine's own, in which that v2 hierarchy
  is unmounted: crun sees, and uses, cgroup v1 alone. The containers' mounts live there too, so
  every command for them must go through the same engine.
- **rlimits.** Root lacks CAP_SYS_RESOURCE, so the runtime cannot raise a container's limits
  above its own: containers.conf's `default_ulimits` keeps them at most at this process's.
- **seccomp.** The runtime's default profile refuses bpf() and perf_event_open() without
  CAP_SYS_ADMIN; the engine's profile grants them to CAP_BPF and CAP_PERFMON (seccomp.py).

The overrides reach podman through CONTAINERS_CONF, a file of the engine's own; /etc is not touched.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

from deploy.seccomp import DEFAULT_PROFILE, granted_to_guards

UNIFIED_HIERARCHY = Path("/sys/fs/cgroup/unified")
#: Limits the runtime sets for every container; low enough to be at or below the machine's own.
ULIMIT_CEILING = 4096


class PodmanError(RuntimeError):
    """A podman command failed; the message has its output."""


def hybrid_cgroups_with_v2_controllers() -> bool:
    """True where crun refuses to start containers: v1 controllers plus a v2 hierarchy holding one."""
    try:
        return bool((UNIFIED_HIERARCHY / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def containers_conf(seccomp_profile: Path) -> str:
    limits = {name: min(resource.getrlimit(number)[0], ULIMIT_CEILING)
              for name, number in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC))}
    ulimits = ", ".join(f'"{name}={value}:{value}"' for name, value in limits.items())
    return f'[containers]\ndefault_ulimits = [{ulimits}]\nseccomp_profile = "{seccomp_profile}"\n'


class Podman:
    """`podman(*args)` runs one podman command in the engine's mount namespace, with its settings.

    `close()` ends the process that holds the namespace (the engine's own); pods still running
    keep it alive through their conmon processes, so take them down first.
    """

    def __init__(self, workdir: Path):
        profile = workdir / "seccomp.json"
        profile.write_text(json.dumps(granted_to_guards(json.loads(DEFAULT_PROFILE.read_text()))))
        conf = workdir / "containers.conf"
        conf.write_text(containers_conf(profile))
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.holder = None
        if hybrid_cgroups_with_v2_controllers():
            self.holder = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f"umount {UNIFIED_HIERARCHY} && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, text=True)
            if self.holder.stdout.readline().strip() != "ready":
                self.holder.wait(timeout=10)
                raise PodmanError(f"cannot unmount {UNIFIED_HIERARCHY} in a mount namespace of the engine's own")

    def command(self, *args: str) -> list[str]:
        enter = ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt"] if self.holder else []
        return [*enter, "podman", *args]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
        return done.stdout

    def inspect(self, kind: str, name: str) -> dict:
        """`podman KIND inspect NAME`'s one object (podman 4.3 prints a pod's bare, a container's in a list)."""
        found = json.loads(self(kind, "inspect", name))
        return found[0] if isinstance(found, list) else found

    def logs(self, container: str) -> str:
        """What the container wrote so far, its standard error included (where gespann logs)."""
        done = subprocess.run(self.command("logs", container), env=self.env, capture_output=True, text=True,
                              timeout=30)
        return done.stdout + done.stderr

    def close(self) -> None:
        if self.holder and self.holder.poll() is None:
            self.holder.send_signal(signal.SIGTERM)
            self.holder.wait(timeout=10)


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Polls `predicate` until it is true or `timeout` seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
