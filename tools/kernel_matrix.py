#!/usr/bin/env python3
"""Run gespann's kernel-facing tests on several kernels and print which modes work on which.

Debian's generic amd64 kernels boot under qemu with virtme-ng (software
emulation), each running the tests marked `root` from this checkout; the
machine's own kernel runs them directly. The table goes to stdout and, with
JSON beside it, to results/; progress goes to stderr. Exit status 1 if a cell
failed or a kernel did not run the suite to the end, 2 if the matrix could
not start (the host lacks what the VMs need, or no test is selected).

    python3 tools/kernel_matrix.py
    python3 tools/kernel_matrix.py --kernels 6.1,host --tests tests/bpf --pytest-args "-x -k ringbuf"
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import debian_kernels
from matrix import kernels, prereqs, runner, selection, shares, verdicts
from matrix.modes import MODES, rows
from matrix.report import Report
from matrix.virtme import VirtmeError, VirtmeNg

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KERNELS = "5.10,6.1,6.12,host"
#: Not under /var/cache, which virtme-ng guests see as an empty tmpfs. Each guest mounts its kernel's
#: modules from here (matrix/shares.py), so that modprobe finds sock_diag and nf_tables.
DEFAULT_CACHE = Path("/srv/gespann-test")
#: What each column runs: the kernel-facing tests. Those marked `process` start gespann as a process,
#: which costs minutes of Python start-up under emulation, and those marked `scale` make tens of
#: thousands of sockets or flows: they run on the host only (the guests run the small-capacity versions).
HOST_MARKERS = "root"
GUEST_MARKERS = "root and not process and not scale"
#: --pytest-args come after these, so they can add to them or override them.
BASE_PYTEST_ARGS = ("-v",)


class CannotStart(Exception):
    """The matrix cannot run at all; the message says what to do."""


class Progress:
    """One line per step on stderr, prefixed with the time since the start; safe from several threads."""

    def __init__(self):
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def say(self, column: str, message: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.start:6.0f} s] {column}: {message}", file=sys.stderr, flush=True)

    def to(self, column: str):
        return lambda message: self.say(column, message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default=DEFAULT_KERNELS,
                        help=f"comma-separated columns: Debian series ({', '.join(debian_kernels.SUITES)}) "
                             f"or {kernels.HOST!r} for this machine's kernel (default: %(default)s)")
    parser.add_argument("--tests", default="tests",
                        help="files or directories, relative to the repository, to take the tests marked root "
                             "from (default: %(default)s)")
    parser.add_argument("--pytest-args", default="",
                        help=f"more pytest arguments, after -m '{HOST_MARKERS}' on the host, "
                             f"-m '{GUEST_MARKERS}' in VMs, and {' '.join(BASE_PYTEST_ARGS)}")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds one kernel may take, boot included (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="VMs that run at once (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and junit XML even when all passed")
    parser.add_argument("--results", type=Path, default=REPO / "results",
                        help="where kernel-matrix.md, .json and the logs go (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="downloaded kernels and virtme-ng's virtualenv (default: %(default)s)")
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python",
                        help="the interpreter with gespann's test dependencies (default: %(default)s)")
    parser.add_argument("--memory", default="2G", help="guest memory (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default: %(default)s)")
    parser.add_argument("--kvm", action="store_true", help="use KVM instead of software emulation")
    parser.add_argument("--uncached", action="store_true",
                        help="read the checkout and Python through virtme-ng's uncached root mount only "
                             "(slower; rules out the guest's cache)")
    args = parser.parse_args(argv)
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    known = [*debian_kernels.SUITES, kernels.HOST]
    if not args.kernels or len(set(args.kernels)) != len(args.kernels) or not set(args.kernels) <= set(known):
        parser.error(f"--kernels: expected distinct names among {', '.join(known)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = Progress()
    logs = args.results / "kernel-matrix"
    try:
        settings = _settings(args, logs, progress)
        virtme = _virtme(args, progress)
    except CannotStart as err:
        print(f"kernel_matrix: {err}", file=sys.stderr)
        return 2
    targets, runs = _targets(args, progress)
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        runs.update(_run_all(targets, settings, virtme, args.jobs, progress))
    except KeyboardInterrupt:
        print("kernel_matrix: interrupted; its VMs are stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, before)
    ordered = [runs[name] for name in args.kernels]
    report = Report(rows(MODES), ordered, verdicts.matrix({r.name: r.results for r in ordered}),
                    commit=_commit(), wall_s=time.monotonic() - progress.start)
    _write(report, args.results)
    if report.passed and not args.keep:
        shutil.rmtree(logs)
    else:
        progress.say("matrix", f"logs, scripts and junit XML are in {logs}")
    progress.say("matrix", f"{'passed' if report.passed else 'FAILED'}; wrote {args.results / 'kernel-matrix.md'}")
    return 0 if report.passed else 1


def _interrupt(signum, frame) -> None:
    """SIGTERM (a CI job's time limit, `kill`) stops the VMs as Ctrl-C does: without it, Python
    would die without running the runners' cleanup, and vng with its qemu would live on."""
    raise KeyboardInterrupt


def _settings(args: argparse.Namespace, logs: Path, progress: Progress) -> runner.Settings:
    """How every kernel runs the suite, with the test files collected once on the host."""
    if not args.python.exists():
        raise CannotStart(f"no interpreter at {args.python}; run `make test` once, or pass --python")
    pytest_args = [*BASE_PYTEST_ARGS, *shlex.split(args.pytest_args)]
    tests = shlex.split(args.tests)
    try:
        files = selection.files_with_tests(args.python, REPO, tests, ["-m", HOST_MARKERS, *pytest_args])
    except selection.SelectionError as err:
        progress.say("matrix", f"collecting on the host failed, so each kernel collects for itself: {err}")
        files = tests  # each kernel's junit XML then reports the collection error as a failure
    if not files:
        raise CannotStart(f"no test in {args.tests} is selected by -m '{HOST_MARKERS}' {' '.join(pytest_args)}")
    progress.say("matrix", f"the selected tests are in {len(files)} files")
    cached = [] if args.uncached else shares.for_suite(REPO, args.python)
    try:
        shares.qemu_options([*cached, shares.Share(logs, writable=True)])
    except shares.ShareError as err:
        raise CannotStart(str(err)) from None
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    return runner.Settings(repo=REPO, python=args.python, pytest_args=[*files, *pytest_args], outdir=logs,
                           timeout_s=args.timeout, memory=args.memory, cpus=args.cpus, kvm=args.kvm,
                           shares=cached, host_markers=HOST_MARKERS, guest_markers=GUEST_MARKERS)


def _virtme(args: argparse.Namespace, progress: Progress) -> VirtmeNg:
    """virtme-ng, installed if any column needs a VM, after checking the host has what VMs need."""
    virtme = VirtmeNg(args.cache / "vng-venv")
    if all(name == kernels.HOST for name in args.kernels):
        return virtme
    missing = prereqs.missing_packages()
    if missing:
        raise CannotStart(f"the VMs need these Debian packages: {' '.join(missing)} (tools/setup-host.sh)")
    try:
        virtme.ensure(progress.to("virtme-ng"))
    except VirtmeError as err:
        raise CannotStart(str(err)) from None
    return virtme


def _targets(args: argparse.Namespace, progress: Progress) -> tuple[list[kernels.Target], dict[str, runner.KernelRun]]:
    """The kernels ready to run, and a finished run for each kernel that could not be fetched."""
    targets, unavailable = [], {}
    for name in args.kernels:
        if name == kernels.HOST:
            targets.append(kernels.host())
            continue
        say = progress.to(name)
        say("fetching")
        try:
            target = kernels.debian(name, args.cache / "kernels", say)
        except (debian_kernels.DebianKernelError, subprocess.CalledProcessError, OSError) as err:
            say(f"not available: {err}")
            unavailable[name] = runner.KernelRun(name, "?", runner.Status.NOT_FETCHED, detail=str(err))
            continue
        say(f"{target.release} is ready")
        targets.append(target)
    return targets, unavailable


def _run_all(targets: list[kernels.Target], settings: runner.Settings, virtme: VirtmeNg, jobs: int,
             progress: Progress) -> dict[str, runner.KernelRun]:
    """Run the host first and alone (its tests wait for events in real time and should not share
    the CPUs with VMs), then the VMs, `jobs` at a time. Ctrl-C stops every VM."""
    stop = threading.Event()

    def run(target: kernels.Target) -> runner.KernelRun:
        say = progress.to(target.name)
        done = runner.run(target, settings, virtme, say, stop)
        booted = f"booted in {done.boot_s:.0f} s, " if done.boot_s is not None else ""
        tested = f"tests took {done.test_s:.0f} s, " if done.test_s is not None else ""
        say(f"{done.status.value}: {booted}{tested}done in {done.total_s:.0f} s")
        return done

    runs = {t.name: run(t) for t in targets if t.is_host}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        pending = {t.name: pool.submit(run, t) for t in targets if not t.is_host}
        runs.update((name, future.result()) for name, future in pending.items())
    except BaseException:
        stop.set()
        pool.shutdown(cancel_futures=True)
        raise
    finally:
        pool.shutdown()
    return runs


def _write(report: Report, results: Path) -> None:
    markdown = report.markdown()
    sys.stdout.write(markdown)
    results.mkdir(parents=True, exist_ok=True)
    (results / "kernel-matrix.md").write_text(markdown)
    (results / "kernel-matrix.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


if __name__ == "__main__":
    sys.exit(main())
