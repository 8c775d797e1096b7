#!/usr/bin/env python3
"""Run gespann's kernel-facing tests on several kernels and print which modes work on which.

Debian's generic amd64 kernels boot under qemu with virtme-ng (software
emulation), each running the tests marked `root` against this checkout; the
machine's own kernel runs them directly. The table goes to stdout and, with
JSON beside it, to results/; progress goes to stderr. Exit status 1 if any
cell failed or a kernel did not run the suite to the end, 2 if the host lacks
what the VMs need.

    python3 tools/kernel_matrix.py
    python3 tools/kernel_matrix.py --kernels 6.1,host --pytest-args "tests/bpf -m root -x"
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import debian_kernels
from matrix import kernels, prereqs, runner, verdicts
from matrix.modes import MODES, rows
from matrix.report import Report
from matrix.virtme import VirtmeError, VirtmeNg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KERNELS = "5.10,6.1,6.12,host"
DEFAULT_PYTEST_ARGS = "tests -m root -v"
DEFAULT_CACHE = Path("/var/cache/gespann-test")


class Progress:
    """One line per step on stderr, prefixed with the time since the start; safe from several threads."""

    def __init__(self):
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def say(self, kernel: str, message: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.start:6.0f} s] {kernel}: {message}", file=sys.stderr, flush=True)

    def for_kernel(self, kernel: str):
        return lambda message: self.say(kernel, message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default=DEFAULT_KERNELS,
                        help=f"comma-separated columns: Debian series ({', '.join(debian_kernels.SUITES)}) "
                             f"or {kernels.HOST!r} for this machine's kernel (default: %(default)s)")
    parser.add_argument("--pytest-args", default=DEFAULT_PYTEST_ARGS,
                        help="what to run, as pytest arguments relative to the repository (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds one kernel may take, boot included (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="VMs run at once (default: %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the logs and junit XML even when every cell passed")
    parser.add_argument("--results", type=Path, default=REPO / "results",
                        help="where kernel-matrix.md, .json and the logs go (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="downloaded kernels and virtme-ng's virtualenv (default: %(default)s)")
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python",
                        help="the interpreter with gespann's test dependencies (default: %(default)s)")
    parser.add_argument("--memory", default="2G", help="guest memory (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: %(default)s)")
    parser.add_argument("--kvm", action="store_true", help="use KVM instead of software emulation")
    args = parser.parse_args(argv)
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in args.kernels if k != kernels.HOST and k not in debian_kernels.SUITES]
    if unknown or not args.kernels or len(set(args.kernels)) != len(args.kernels):
        parser.error(f"--kernels: expected distinct names among {', '.join([*debian_kernels.SUITES, kernels.HOST])}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.python.exists():
        print(f"kernel_matrix: no interpreter at {args.python}; run `make test` once, or pass --python",
              file=sys.stderr)
        return 2
    progress = Progress()
    logs = args.results / "kernel-matrix"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    settings = runner.Settings(repo=REPO, python=args.python, pytest_args=shlex.split(args.pytest_args),
                               outdir=logs, timeout_s=args.timeout, memory=args.memory, cpus=args.cpus,
                               kvm=args.kvm)
    virtme = VirtmeNg(args.cache / "vng-venv")
    if any(k != kernels.HOST for k in args.kernels):
        missing = prereqs.missing_packages()
        if missing:
            print(f"kernel_matrix: the VMs need these Debian packages: {' '.join(missing)} "
                  "(tools/setup-host.sh installs them)", file=sys.stderr)
            return 2
        try:
            virtme.ensure(progress.for_kernel("virtme-ng"))
        except VirtmeError as err:
            print(f"kernel_matrix: {err}", file=sys.stderr)
            return 2

    runs: dict[str, runner.KernelRun] = {}
    targets = []
    for name in args.kernels:
        say = progress.for_kernel(name)
        if name == kernels.HOST:
            targets.append(kernels.host())
            continue
        say("fetching")
        try:
            target = kernels.debian(name, args.cache / "kernels", say)
        except (debian_kernels.DebianKernelError, subprocess.CalledProcessError, OSError) as err:
            say(f"not available: {err}")
            runs[name] = runner.KernelRun(name, "?", runner.Status.NOT_FETCHED, detail=str(err))
            continue
        say(f"{target.release} is ready")
        targets.append(target)

    stop = threading.Event()

    def run(target: kernels.Target) -> runner.KernelRun:
        say = progress.for_kernel(target.name)
        done = runner.run(target, settings, virtme, say, stop)
        timing = f"booted in {done.boot_s:.0f} s, " if done.boot_s is not None else ""
        tested = f"tests took {done.test_s:.0f} s, " if done.test_s is not None else ""
        say(f"{done.status.value}: {timing}{tested}done in {done.total_s:.0f} s")
        return done

    # The host first and alone: its tests wait for events in real time and should not share the CPUs with VMs.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    try:
        for target in targets:
            if target.is_host:
                runs[target.name] = run(target)
        pending = {t.name: pool.submit(run, t) for t in targets if not t.is_host}
        for name, future in pending.items():
            runs[name] = future.result()
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(cancel_futures=True)
        print("kernel_matrix: interrupted; its VMs are stopped", file=sys.stderr)
        return 130
    finally:
        pool.shutdown()

    ordered = [runs[name] for name in args.kernels]
    report = Report(rows(MODES), ordered, verdicts.matrix({r.name: r.results for r in ordered}),
                    commit=_commit(), wall_s=time.monotonic() - progress.start)
    markdown = report.markdown()
    sys.stdout.write(markdown)
    (args.results / "kernel-matrix.md").write_text(markdown)
    (args.results / "kernel-matrix.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    if report.passed and not args.keep:
        shutil.rmtree(logs)
    else:
        progress.say("matrix", f"logs and junit XML are in {logs}")
    progress.say("matrix", f"{'passed' if report.passed else 'FAILED'}; wrote {args.results / 'kernel-matrix.md'}")
    return 0 if report.passed else 1


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


if __name__ == "__main__":
    sys.exit(main())
