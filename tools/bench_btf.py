#!/usr/bin/env python3
"""Measure what resolving the probes' kernel types costs a fresh gespann process.

Each run is a new interpreter that imports gespann.btf and resolves the whole
manifest (tcp_sock, sock, ... offsets, fentry and tp_btf ids):
  cold: from /sys/kernel/btf/vmlinux, cache disabled (the first start after a kernel change);
  warm: the same, answered by the disk cache;
  vendored: from a vendored table (hosts without BTF).
Times run from before `import gespann.btf` to the last offset; interpreter
start-up is excluded (it is printed separately). RSS is the growth of the
process's resident set over the same span. Medians over --runs.

    python3 tools/bench_btf.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
rss0, cpu0, t0 = rss_mb(), time.process_time(), time.perf_counter()
from gespann import btf
from gespann.btf.manifest import FIELDS
mode = sys.argv[1]
types = btf.kernel_types("vendored" if mode == "vendored" else "btf", use_cache=mode == "warm")
offsets = [types.optional_field(ref.key) for ref in FIELDS]
t1, cpu1 = time.perf_counter(), time.process_time()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ms": (t1 - t0) * 1e3, "cpu_ms": (cpu1 - cpu0) * 1e3, "rss_mb": rss_mb() - rss0,
                  "peak_mb": peak - rss0, "fields": len(offsets), "source": types.source,
                  "construct": "construct" in sys.modules}))
"""


def run(mode: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def startup_ms(env: dict, runs: int) -> float:
    import time

    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, XDG_CACHE_HOME=cache, PYTHONPATH=str(ROOT))
        run("warm", env)  # fills the cache
        results = {mode: [run(mode, env) for _ in range(args.runs)] for mode in ("cold", "warm", "vendored")}
        print(f"interpreter start-up (python -c pass): {startup_ms(env, args.runs):.1f} ms median, not included below")
    print(f"{'mode':9} {'wall ms':>8} {'cpu ms':>8} {'RSS +MB':>8} {'peak +MB':>9}  fields  parser imported")
    for mode, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("ms", "cpu_ms", "rss_mb", "peak_mb")}
        print(f"{mode:9} {med['ms']:8.1f} {med['cpu_ms']:8.1f} {med['rss_mb']:8.1f} {med['peak_mb']:9.1f}"
              f"  {runs[0]['fields']:6}  {runs[0]['construct']}")
    print(f"(medians of {args.runs} fresh processes each; source of the warm runs: {results['warm'][0]['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
