#!/usr/bin/env python3
"""Benchmark gespann side by side with its peers, on this machine, in one run: `make bench`.

Peers: bpftrace running tools/bench/connections.bt (the same tracepoints, the same
kind of counters); libbpf-tools' tcplife and tcpstates, CO-RE C loaded by libbpf
(tools/bench/peers.py); and bcc's tcplife and tcpstates where they can run (on this
machine they are tried and recorded as they fail; with --vm, they are measured
in a Debian 6.1 guest with the matching kernel headers, see tools/bench/vm.py).

What is measured, all as medians over rounds in which the tracers take turns:
start-up to probes attached and first metrics (or first output), wall and CPU;
peak RSS; the kernel's own run time per event of each tracer's programs
(BPF run statistics); loopback connections per second with no tracer, with
gespann, with bpftrace; gespann's CPU per 10,000 connections; whether metrics
mode counted every connection; trace mode's losses, if this build has it, the worst
run's as the verdict. Then the libbpf-tools section: the same figures for tcplife and
tcpstates beside `gespann run` and `gespann trace`, user-space CPU per record at one
fixed connection rate, and the slowdown of a TCP+UDP workload. Then the
scale section (tools/bench/scale.py): CPU, wall time and RSS of one scrape at 0 to
100,000 open sockets and 0 and 100,000 UDP flows, beside `ss -tin` and a batch map read. And the
drop section (tools/bench/drops.py): packet_drops' in-kernel ns per dropped packet beside
udp_send's and udp_receive's per packet, over the same datagrams to a closed port, and how often
kfree_skb ran per packet of ordinary TCP and UDP traffic. And the breakdown (tools/bench/breakdown.py):
per program, ns per event, events per connection and ns per connection, their sum as a share of a bare
loopback connection's CPU, the floor (empty programs of the same flavours on the same tracepoints),
and bpftrace and tcplife beside them, all in the same rounds. With --soak SECONDS (`make bench`: an hour),
the soak section (tools/bench/soak.py): gespann with records and per-process labels on, at the highest
loopback connection rate for that long; its RSS over time, records lost, metrics against the kernel's.

Writes results/bench/bench.md, bench.json and bench.png; prints the table.
Needs root, bpftrace, bpftool and gcc (tools/setup-host.sh bench).

    python3 tools/bench.py [--rounds 9] [--cost-rounds 3] [--connections 30000] [--rate 2000] [--vm]
                           [--no-scale | --scale-only] [--drops-only] [--peers-only] [--breakdown-only]
                           [--soak SECONDS] [--soak-only]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import bcc_tracer, breakdown, chart, drops, loadgen, peers, report, runs, scale, soak
from bench.bpftrace_tracer import Bpftrace
from bench.bpftrace_tracer import version as bpftrace_version
from bench.gespann_tracer import GespannMetrics
from bench.namespace import Namespace
from bench.process import NotReady
from bench.trace_mode import NOT_AVAILABLE, GespannTrace
from bench.trace_mode import available as trace_available

REPO = Path(__file__).resolve().parent.parent
GESPANN = REPO / ".venv" / "bin" / "gespann"
NEEDED = {"bpftrace": "bpftrace", "bpftool": "bpftool", "gcc": "gcc", "ip": "iproute2"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds of start-up and workload (default: %(default)s)")
    parser.add_argument("--cost-rounds", type=int, default=3,
                        help="rounds with BPF run statistics on, for in-kernel cost (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=30000,
                        help="loopback connections per workload run (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="client threads of the workload (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=30, help="bound on one workload run (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=2000,
                        help="the fixed connection rate at which user-space CPU per record is compared, one every "
                             "tracer keeps up with (default: %(default)s per second)")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "bench",
                        help="where bench.md, bench.json and bench.png go (default: %(default)s)")
    parser.add_argument("--gespann", type=Path, default=GESPANN, help="the gespann executable (default: %(default)s)")
    parser.add_argument("--vm", action="store_true",
                        help="also measure bcc tcplife/tcpstates, gespann and bpftrace in a Debian 6.1 VM "
                             "with kernel headers (slow: software emulation)")
    parser.add_argument("--vm-only", action="store_true", help="only the VM part; merges into the existing bench.json")
    parser.add_argument("--no-scale", action="store_true", help="leave out the scale section (scrape cost at 100,000 "
                                                                 "sockets and flows: about a minute)")
    parser.add_argument("--scale-only", action="store_true",
                        help="only the scale section; merges into the existing bench.json")
    parser.add_argument("--drops-only", action="store_true",
                        help="only the drop section (packet_drops against the UDP probes, about 15 s); "
                             "merges into the existing bench.json")
    parser.add_argument("--peers-only", action="store_true",
                        help="only the libbpf-tools section (tcplife, tcpstates beside gespann, about 6 min with "
                             "the default rounds); merges into the existing bench.json")
    parser.add_argument("--breakdown-only", action="store_true",
                        help="only the breakdown: per program ns per event, events and ns per connection, the "
                             "floor, the share of a bare connection's CPU, beside bpftrace and tcplife "
                             "(--cost-rounds rounds of --connections; about 10 s a round at 10000); merges into "
                             "the existing bench.json")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=EXECUTABLE",
                        help="in the breakdown, another gespann (a build to compare) takes its turn in each round; "
                             "may be given more than once")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="also run the soak: gespann with records and per-process labels on, this long at the "
                             "highest loopback connection rate (make bench: 3600; default: no soak)")
    parser.add_argument("--soak-only", action="store_true",
                        help="only the soak (--soak SECONDS, default then 3600); merges into the existing bench.json")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: write bench.md and bench.png again from the existing bench.json")
    # Inside the VM (bench/vm.py): where to write the figures, the load generator built by the host, the headers.
    parser.add_argument("--guest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--loadgen", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kernel-source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if sum((args.vm_only, args.scale_only, args.drops_only, args.peers_only, args.breakdown_only,
            args.soak_only)) > 1:
        parser.error("--vm-only, --scale-only, --drops-only, --peers-only, --breakdown-only and --soak-only each "
                     "measure one part: give one")
    for item in args.compare:
        label, _, executable = item.partition("=")
        if not label or not executable or not Path(executable).exists():
            parser.error(f"--compare {item!r}: give LABEL=EXECUTABLE, an existing gespann executable")
    if args.soak_only and not args.soak:
        args.soak = 3600
    if args.soak < 0:
        parser.error("--soak must be 0 (no soak) or more seconds")
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    for name in ("rounds", "cost_rounds", "connections", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


class CannotRun(Exception):
    """The bench cannot start; the message says what to install or do."""


def preflight(gespann: Path, scale_only: bool = False, drops_only: bool = False, peers_only: bool = False) -> None:
    if os.geteuid() != 0:
        raise CannotRun("needs root (BPF programs, network namespaces)")
    needed = {"ip": "iproute2", "ss": "iproute2"} if scale_only else NEEDED
    if peers_only:
        needed = {**{program: pkg for program, pkg in NEEDED.items() if program != "bpftrace"},
                  "tcplife": peers.PACKAGE, "tcpstates": peers.PACKAGE}
    if drops_only:
        needed = {program: pkg for program, pkg in NEEDED.items() if program != "bpftrace"}
    missing = [pkg for program, pkg in needed.items() if not shutil.which(program)
               and not shutil.which(program, path="/usr/sbin:/sbin")]
    if missing:
        raise CannotRun(f"missing Debian packages: {' '.join(sorted(set(missing)))} (tools/setup-host.sh bench)")
    if not gespann.exists():
        raise CannotRun(f"no gespann at {gespann}; `make bench` installs it")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {message}", file=sys.stderr, flush=True)


def meta(args: argparse.Namespace) -> dict:
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"date": datetime.date.today().isoformat(), "kernel": os.uname().release, "cpus": os.cpu_count(),
            "commit": commit, "bpftrace": bpftrace_version(), "rounds": args.rounds, "cost_rounds": args.cost_rounds,
            "connections": args.connections, "threads": args.threads, "load_before": _load()}


def stamp(args: argparse.Namespace) -> dict:
    """When and where a section measured after the main run (it may be merged into an older bench.json)."""
    now = meta(args)
    return {key: now[key] for key in ("date", "kernel", "cpus", "commit", "load_before")}


def stamped(args: argparse.Namespace, run: Callable[[], dict]) -> dict:
    """A section's results with its stamp, taken before it runs: its load average is the machine's
    before the section, not the section's own."""
    measured = stamp(args)
    return {**run(), "measured": measured}


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def host_bench(args: argparse.Namespace, workdir: Path, results: dict) -> None:
    binary = loadgen.build(workdir / "loadgen")
    with Namespace() as ns:
        workload = runs.Workload(binary, args.connections, args.seconds, args.threads, tuple(ns.exec_prefix))
        runs.baseline(workload)  # warm-up: caches, the namespace's first ports
        gespann = GespannMetrics(args.gespann, workdir, ns.path)
        tracers = {
            report.NONE: lambda stats=False: runs.baseline(workload),
            report.GESPANN: lambda stats=False: runs.gespann_metrics(gespann, workload, stats),
            report.BPFTRACE: lambda stats=False: runs.bpftrace(Bpftrace(ns.inode), workload, stats),
        }
        order = list(tracers)
        for index in range(args.rounds):
            results["rounds"].append({name: tracers[name]() for name in runs.rotated(order, index)})
            say(f"round {index + 1}/{args.rounds}: " + ", ".join(
                f"{name} {r['rate']:.0f}/s" for name, r in results["rounds"][-1].items()))

        gespann_tp = GespannMetrics(args.gespann, workdir, ns.path, attach_mode="tracepoint")
        tracers[report.GESPANN_TP] = lambda stats=False: runs.gespann_metrics(gespann_tp, workload, stats)
        from gespann.bpf.programs import enable_run_stats

        with enable_run_stats():
            for index in range(args.cost_rounds):
                results["kernel_cost"].append({name: tracers[name](stats=True)
                                               for name in (report.GESPANN, report.GESPANN_TP, report.BPFTRACE)})
                say(f"cost round {index + 1}/{args.cost_rounds} done")
            results["drops"] = stamped(args, lambda: drops.run(gespann, ns, lambda: workload.run().connections,
                                                               args.cost_rounds, say))
            results["breakdown"] = stamped(args, lambda: breakdown.run(gespann, workload, workdir, ns.inode,
                                                                       args.cost_rounds, say,
                                                                       compared(args, workdir, ns.path)))
        results["meta"].update(report.probe_sets(results))

        if trace_available(args.gespann):
            programs = len(results["kernel_cost"][-1][report.GESPANN]["per_tracepoint"])
            trace = GespannTrace(args.gespann, workdir, gespann.config, programs)
            measured = [runs.gespann_trace(trace, workload) for _ in range(args.rounds)]
            results["trace"] = {"available": True, "runs": measured}
        else:
            results["trace"] = {"available": False, "note": NOT_AVAILABLE}
            say(NOT_AVAILABLE)
        results["peers"] = stamped(args, lambda: peers.run(args.gespann, workdir, gespann, workload, args.rounds,
                                                           args.cost_rounds, args.rate, say))
    results["bcc_host"] = bcc_on_host(workdir)


@contextlib.contextmanager
def _section(args: argparse.Namespace, workdir: Path):
    """A section run alone: a namespace of its own, its warmed-up workload, and gespann to start in it."""
    binary = loadgen.build(workdir / "loadgen")
    with Namespace() as ns:
        workload = runs.Workload(binary, args.connections, args.seconds, args.threads, tuple(ns.exec_prefix))
        runs.baseline(workload)  # warm-up, as in the full run
        yield ns, workload, GespannMetrics(args.gespann, workdir, ns.path)


def peers_only(args: argparse.Namespace, workdir: Path) -> dict:
    """The libbpf-tools section alone, in a namespace of its own."""
    with _section(args, workdir) as (ns, workload, gespann):
        return stamped(args, lambda: peers.run(args.gespann, workdir, gespann, workload, args.rounds, args.cost_rounds,
                                               args.rate, say))


def drops_only(args: argparse.Namespace, workdir: Path) -> dict:
    """The drop section alone, in a namespace of its own: `--cost-rounds` rounds."""
    from gespann.bpf.programs import enable_run_stats

    with _section(args, workdir) as (ns, workload, gespann), enable_run_stats():
        return stamped(args, lambda: drops.run(gespann, ns, lambda: workload.run().connections, args.cost_rounds, say))


def breakdown_only(args: argparse.Namespace, workdir: Path) -> dict:
    """The breakdown alone, in a namespace of its own: `--cost-rounds` rounds."""
    from gespann.bpf.programs import enable_run_stats

    with _section(args, workdir) as (ns, workload, gespann), enable_run_stats():
        return stamped(args, lambda: breakdown.run(gespann, workload, workdir, ns.inode, args.cost_rounds, say,
                                                   compared(args, workdir, ns.path)))


def compared(args: argparse.Namespace, workdir: Path, netns_path: str) -> dict[str, GespannMetrics]:
    """label -> `gespann run` of this build with per-peer counts on, and of each --compare build, each with
    a config of its own."""
    variants = {breakdown.PEERS_ON: GespannMetrics(args.gespann, workdir, netns_path, extra=breakdown.PEERS_CONFIG,
                                                   name="peers")}
    for index, item in enumerate(args.compare):
        label, _, executable = item.partition("=")
        own = workdir / f"compare-{index}"
        own.mkdir(exist_ok=True)
        variants[label] = GespannMetrics(Path(executable), own, netns_path)
    return variants


def bcc_on_host(workdir: Path) -> dict[str, str]:
    """Each bcc tool tried for real; what became of it, in one line."""
    outcome = {}
    for tool in bcc_tracer.TOOLS:
        try:
            launched, startup = bcc_tracer.Bcc(tool, workdir).start()
            launched.stop()
            outcome[tool.name] = f"runs (attached in {startup.wall_s:.2f} s): not expected on a host without headers"
        except NotReady as err:
            outcome[tool.name] = str(err).splitlines()[0]
        say(f"{tool.name}: {outcome[tool.name]}")
    return outcome


def write(results: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = report.markdown(results)
    (directory / "bench.md").write_text(markdown)
    chart.write(results, directory / "bench.png")
    sys.stdout.write(markdown)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.guest:
        from bench import vm

        return vm.guest_main(args)
    if args.report_only:
        try:
            write(json.loads((args.results / "bench.json").read_text()), args.results)
        except (OSError, ValueError) as err:
            print(f"bench: --report-only needs an earlier {args.results / 'bench.json'}: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        preflight(args.gespann, scale_only=args.scale_only,
                  drops_only=args.drops_only or args.breakdown_only or args.soak_only,
                  peers_only=args.peers_only)
    except CannotRun as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    results = {"meta": meta(args), "rounds": [], "kernel_cost": []}
    merging = (args.vm_only or args.scale_only or args.drops_only or args.peers_only or args.breakdown_only
               or args.soak_only)
    if merging:
        try:
            results = json.loads((args.results / "bench.json").read_text())
        except (OSError, ValueError) as err:
            print(f"bench: --vm-only, --scale-only, --drops-only, --peers-only, --breakdown-only and --soak-only "
                  f"need an earlier "
                  f"{args.results / 'bench.json'}: {err}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="gespann-bench-") as tmp:
        workdir = Path(tmp)
        if not merging:
            host_bench(args, workdir, results)
            results["meta"]["load_after"] = _load()
        if args.drops_only:
            results["drops"] = drops_only(args, workdir)
        if args.peers_only:
            results["peers"] = peers_only(args, workdir)
        if args.breakdown_only:
            results["breakdown"] = breakdown_only(args, workdir)
            sys.stderr.write("\n".join(breakdown.markdown(results["breakdown"])) + "\n")
        if args.scale_only or not (args.vm_only or args.no_scale or args.drops_only or args.peers_only
                                   or args.breakdown_only or args.soak_only):
            results["scale"] = stamped(args, lambda: scale.run(args.gespann, workdir, say))
        if args.vm or args.vm_only:
            from bench import vm

            results["vm"] = vm.run(REPO, args, say)
        if args.soak and (args.soak_only or not merging):
            say(f"soak: {args.soak:.0f} s with records and per-process labels on")
            results["soak"] = stamped(args, lambda: soak.run(args.gespann, workdir, loadgen.build(workdir / "loadgen"),
                                                             args.soak, args.threads, say))
    write(results, args.results)
    missed = [name for name, met in report.verdicts(results).items() if met is False]
    say(f"targets missed: {'; '.join(missed)}" if missed else "every judged target met")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (loadgen.LoadError, NotReady) as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
