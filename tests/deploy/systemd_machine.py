"""A Debian 12 booted with systemd as PID 1 in systemd-nspawn, driven from a host that runs no systemd.

The host has no systemd of its own, so neither machinectl nor systemd-run can
reach the container: it is booted with `--register=no --keep-unit` (nspawn
then asks no host service for anything), and commands run inside it through
nsenter into its PID 1's namespaces. It has a network namespace of its own
(`--private-network`: loopback only), so its /proc/net/snmp counts exactly
the traffic made in it. It may hold CAP_BPF and CAP_PERFMON
(`--capability=`), and may call bpf() and perf_event_open(), which nspawn's
own seccomp filter refuses by default (`--system-call-filter=`).

Only processes started here are ever signalled, by their PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
ROOTFS_TOOL = REPO / "tools" / "systemd-rootfs.sh"
NEEDED_COMMANDS = ("systemd-nspawn", "mmdebstrap", "nsenter")
SETUP_HINT = "tools/setup-host.sh systemd installs them"
#: Where the checkout is copied inside the root file system, for the unit's install lines to run in.
CHECKOUT_INSIDE = "/usr/local/src/gespann"
#: What a copied checkout leaves out: virtualenvs, caches, build output.
NOT_COPIED = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info", "build", ".pytest_cache",
                                    ".hypothesis", "results")
CONTAINER_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
#: The host's proxy settings reach pip inside, so it downloads as the host would.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class MachineError(AssertionError):
    pass


def missing_commands() -> list[str]:
    return [command for command in NEEDED_COMMANDS if shutil.which(command) is None]


def unit_install_lines(unit: Path) -> list[str]:
    """The commands a unit's header comment gives for installing it (its lines indented by three spaces)."""
    header = unit.read_text().split("\n[Unit]")[0]
    return [line[4:].strip() for line in header.splitlines() if line.startswith("#   ")]


def build_rootfs(root: Path) -> None:
    """Debian 12 minbase with systemd, dbus, python3 and venv (tools/systemd-rootfs.sh)."""
    _check([str(ROOTFS_TOOL), str(root)], "building the root file system", timeout=600)


def copy_checkout(root: Path) -> str:
    """This checkout, as it is on disk (uncommitted changes included), inside `root`; its path there."""
    shutil.copytree(REPO, root / CHECKOUT_INSIDE.lstrip("/"), ignore=NOT_COPIED, symlinks=True)
    return CHECKOUT_INSIDE


def run_unbooted(root: Path, script: str, cwd: str, timeout: float = 600) -> str:
    """`script` (sh -e) run in `root` without booting it, as root, in the host's network (pip downloads).

    pip inside trusts what the host trusts: the host's CA bundle is bound in, read-only.
    """
    command = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(root), "--pipe",
               f"--chdir={cwd}"]
    bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    if os.path.isfile(bundle):
        command += [f"--bind-ro={bundle}:/run/host-ca-certificates.crt",
                    "--setenv=PIP_CERT=/run/host-ca-certificates.crt"]
    command += [f"--setenv={name}={os.environ[name]}" for name in PROXY_VARIABLES if name in os.environ]
    return _check([*command, "/bin/sh", "-ec", script], f"running {script!r} in the root file system",
                  timeout=timeout).stdout


class Machine:
    """The root file system at `root`, booted; `run()` executes a command inside it."""

    def __init__(self, root: Path, console_log: Path, capabilities: Sequence[str],
                 system_calls: Sequence[str], boot_timeout: float = 120):
        self.root = root
        self.name = f"gespann-systemd-{uuid.uuid4().hex[:6]}"
        self._console = console_log.open("w")
        started = time.monotonic()
        self._nspawn = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", f"--machine={self.name}", "-D", str(root), "--boot",
             "--private-network", f"--capability={','.join(capabilities)}",
             f"--system-call-filter={' '.join(system_calls)}", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT)
        try:
            self.leader = self._wait_for_leader(started + boot_timeout)
            state = self._wait_for_boot(started + boot_timeout)
        except BaseException:
            self.poweroff()
            raise
        self.boot_seconds = time.monotonic() - started
        self.state_after_boot = state

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """`command` inside the container: in all of PID 1's namespaces, with a clean environment, as root."""
        enter = ["nsenter", f"--target={self.leader}", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
                 "--", "/usr/bin/env", "-i", *CONTAINER_ENV]
        result = subprocess.run([*enter, *command], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise MachineError(f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show -p ...` of `unit`, as a mapping."""
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        """What the unit's processes logged since it was last started (its current invocation)."""
        invocation = self.show(unit, "InvocationID")["InvocationID"]
        if not invocation:
            return ""
        return self.run("journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "--output=cat", "--no-pager").stdout

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise MachineError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def host_pid(self, pid: int) -> int:
        """The host's PID of the container's process `pid`: the one in PID 1's namespace with that NSpid."""
        namespace = os.readlink(f"/proc/{self.leader}/ns/pid")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
            if int(nspid[-1]) == pid:
                return int(entry)
        raise MachineError(f"no process {pid} in the container")

    @property
    def proc_net(self) -> Path:
        """/proc/net as the container sees it: its own network namespace."""
        return Path(f"/proc/{self.leader}/net")

    def console_tail(self, lines: int = 30) -> str:
        self._console.flush()
        text = Path(self._console.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def poweroff(self, timeout: float = 60) -> Optional[int]:
        """systemd inside shuts down; nspawn exits. If it has not within `timeout`, nspawn is killed."""
        if self._nspawn.poll() is None and getattr(self, "leader", None):
            try:
                self.run("systemctl", "poweroff", check=False, timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            self._nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._nspawn.send_signal(signal.SIGKILL)
            self._nspawn.wait(timeout=30)
        self._console.close()
        return self._nspawn.returncode

    def _wait_for_boot(self, deadline: float) -> str:
        """systemd's state once it has booted: `running`, or `degraded` if a unit failed. Before systemd
        listens (PID 1 may not even be systemd yet), systemctl says `offline` or cannot run at all: asked
        again, until the deadline."""
        while True:
            answer = self.run("systemctl", "is-system-running", "--wait", check=False,
                              timeout=max(deadline - time.monotonic(), 1))
            state = answer.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise MachineError(f"the container's systemd is {state!r} ({answer.stderr.strip()}):\n"
                                   f"{self.console_tail()}")
            time.sleep(0.1)

    def _wait_for_leader(self, deadline: float) -> int:
        """The container's PID 1, as the host numbers it: nspawn's child whose own namespace calls it 1."""
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise MachineError(f"systemd-nspawn exited with {self._nspawn.returncode}:\n{self.console_tail()}")
            for child in _children(self._nspawn.pid):
                try:
                    status = Path(f"/proc/{child}/status").read_text()
                except OSError:
                    continue
                if any(line.startswith("NSpid:") and line.split()[-1] == "1" for line in status.splitlines()):
                    return child
            time.sleep(0.05)
        raise MachineError(f"the container's PID 1 did not appear:\n{self.console_tail()}")


def _children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return children


def _check(command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise MachineError(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result
