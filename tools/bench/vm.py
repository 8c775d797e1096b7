"""bcc where it can run: a Debian 6.1 guest (the kernel matrix's) with that kernel's headers.

The host fetches the kernel (tools/debian_kernels.py, as the matrix does) and
its headers (headers.py), builds the load generator, and boots the kernel with
virtme-ng under software emulation, one VM at a time (flock on the matrix's
vm.lock). The guest sees the host's root read-only, so bpftrace, bpftool and
bcc are the host's own packages; the checkout, its virtualenv, the headers and
the kernel's modules are mounted cached, and the results directory writable.
Inside, `tools/bench.py --guest FILE` starts each tracer once (gespann,
bpftrace, bcc tcplife, bcc tcpstates) under the same small workload with BPF
run statistics on, and writes its figures to FILE.

Everything in the guest runs several times slower than on the host (software
emulation): its figures compare the tracers with each other, in the same VM,
and not with the host's.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import debian_kernels
from matrix import kernels, prereqs, shares
from matrix.virtme import VirtmeError, VirtmeNg

from . import bcc_tracer, headers, loadgen, report, runs
from .bpftrace_tracer import Bpftrace
from .gespann_tracer import GespannMetrics
from .namespace import Namespace
from .process import NotReady

CACHE = Path("/srv/gespann-test")
LOCK = CACHE / "vm.lock"
SERIES = "6.1"
GUEST_CONNECTIONS = 2000
GUEST_THREADS = 1
TIMEOUT_S = 45 * 60


def run(repo: Path, args: argparse.Namespace, say: Callable[[str], None]) -> dict:
    """The guest's figures, or {"note": why not} saying precisely what blocked them."""
    try:
        return _run(repo, args, say)
    except (VirtmeError, headers.HeadersError, debian_kernels.DebianKernelError, loadgen.LoadError,
            subprocess.CalledProcessError, OSError) as err:
        say(f"vm: {err}")
        return {"note": f"not measured: {str(err).strip().splitlines()[0]}"}


def _run(repo: Path, args: argparse.Namespace, say: Callable[[str], None]) -> dict:
    missing = prereqs.missing_packages()
    if missing:
        return {"note": f"not measured: the VM needs Debian packages {' '.join(missing)} (tools/setup-host.sh matrix)"}
    say(f"vm: fetching Debian's {SERIES} kernel and its headers")
    target = kernels.debian(SERIES, CACHE / "kernels", lambda m: say(f"vm: {m}"))
    kernel = debian_kernels.cached_kernel(CACHE / "kernels", target.release)
    root = headers.fetch(kernel, CACHE / "bench" / "headers")
    virtme = VirtmeNg(CACHE / "vng-venv")
    virtme.ensure(lambda m: say(f"vm: {m}"))
    python = repo / ".venv" / "bin" / "python"
    CACHE.joinpath("bench").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=CACHE / "bench") as tmp:
        out = Path(tmp)
        binary = loadgen.build(out / "loadgen")
        exported = [*shares.for_suite(repo, python), shares.Share(target.modules), shares.Share(root),
                    shares.Share(out, writable=True)]
        figures = out / "vm.json"
        script = out / "guest.sh"
        script.write_text(guest_script(repo, python, exported, figures, binary, out) + "\n")
        argv = ["flock", str(LOCK), *virtme.command(target.vmlinuz, f"sh {shlex.quote(str(script))}",
                                                     shares.qemu_options(exported), memory="2G", cpus=2, kvm=False)]
        LOCK.touch(exist_ok=True)
        say(f"vm: booting {target.release} (waits for {LOCK} while another VM runs)")
        started = time.monotonic()
        with open(out / "console.log", "w") as console:
            try:
                subprocess.run(argv, env=virtme.env(), stdin=subprocess.DEVNULL, stdout=console,
                               stderr=subprocess.STDOUT, timeout=TIMEOUT_S, start_new_session=True, check=False)
            except subprocess.TimeoutExpired:
                return {"note": f"not measured: the VM did not finish within {TIMEOUT_S // 60} minutes"}
        say(f"vm: done in {time.monotonic() - started:.0f} s")
        if not figures.exists():
            log = runner_tail(out / "guest.log") or runner_tail(out / "console.log")
            return {"note": f"not measured: the guest wrote no figures; its last lines: {log}"}
        result = json.loads(figures.read_text())
        result["release"] = target.release
        result["headers"] = ", ".join(f"{p} {kernel.version}" for p in headers.package_names(target.release))
        return result


def runner_tail(path: Path, lines: int = 6) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def guest_script(repo: Path, python: Path, exported: list, figures: Path, binary: Path, out: Path) -> str:
    """The shell script the guest runs: mount the shares and tracing file systems, run the guest bench."""
    root = next(s.path for s in exported if (s.path / "merged").is_dir())
    command = [str(python), str(repo / "tools" / "bench.py"), "--guest", str(figures), "--loadgen", str(binary),
               "--kernel-source", str(headers.merged_dir(root))]
    return "\n".join([
        *shares.mount_commands(exported),
        "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing",
        "mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug",
        f"cd {shlex.quote(str(repo))} || exit 1",
        f"PYTHONDONTWRITEBYTECODE=1 {shlex.join(command)} > {shlex.quote(str(out / 'guest.log'))} 2>&1",
        f"echo $? > {shlex.quote(str(out / 'guest.exit'))}",
    ])


def guest_main(args: argparse.Namespace) -> int:
    """Inside the VM: each tracer once under the same workload, with BPF run statistics on."""
    from gespann.bpf.programs import enable_run_stats

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] guest: {message}", flush=True)

    result = {"tracers": {}}
    connections = min(args.connections, GUEST_CONNECTIONS)
    workdir = Path(tempfile.mkdtemp(prefix="gespann-bench-"))
    with Namespace() as ns, enable_run_stats():
        workload = runs.Workload(args.loadgen, connections, 300, GUEST_THREADS, tuple(ns.exec_prefix))
        result["baseline"] = runs.baseline(workload)
        tracers = {
            report.GESPANN: lambda: runs.gespann_metrics(GespannMetrics(args.gespann, workdir, ns.path), workload,
                                                         stats=True),
            report.BPFTRACE: lambda: runs.bpftrace(Bpftrace(ns.inode), workload, stats=True),
            **{tool.name: (lambda tool=tool: runs.bcc(bcc_tracer.Bcc(tool, workdir, args.kernel_source), workload,
                                                     stats=True)) for tool in bcc_tracer.TOOLS},
        }
        for name, measure in tracers.items():
            say(f"{name}: starting")
            try:
                result["tracers"][name] = measure()
                say(f"{name}: started in {result['tracers'][name]['startup_wall_s']:.1f} s")
            except (NotReady, loadgen.LoadError) as err:
                result["tracers"][name] = {"error": str(err).splitlines()[0]}
                say(f"{name}: {err}")
    result["summary"] = (f"Each tracer started once in the guest ({os.uname().release}), then {connections} loopback "
                         f"connections ({GUEST_THREADS} client thread; {result['baseline']['rate']:.0f} conn/s with "
                         "no tracer); bcc tools print one line per event to a file.")
    args.guest.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit("run through tools/bench.py --vm")
