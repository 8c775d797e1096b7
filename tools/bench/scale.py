"""The scale section: what one scrape of `gespann run` costs as open sockets and UDP flows grow.

In the bench's namespace, for each state (open TCP sockets, then live UDP flows), gespann's
/metrics is fetched a few times. A scrape's CPU is gespann's own (its threads' schedstat
around the request), its wall time the request's, and RSS is read after. Beside them, the
floors: `ss -tin` in the same namespace (its process start included) for sockets, and a
batch read of a map of the flow map's size and layout, in the bench's own process, for flows.

Sockets are held by helper processes (one may hold 20,000 descriptors on this kind of
machine), each connecting to its own listener from its own loopback address, so that
100,000 sockets need neither more descriptors nor more ephemeral ports than one has.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from . import procfs
from .gespann_tracer import GespannMetrics
from .namespace import Namespace
from .summary import spread

SOCKETS = (0, 10000, 72000, 100000)
FLOWS = (0, 100000)
#: Scrapes per state after its first (see _scrapes).
SCRAPES = 10
#: Connections per holder process: 18,000 descriptors each.
PER_HOLDER = 9000
#: Room in gespann's flow map for every flow of the largest state, so none is evicted.
FLOW_MAP = 1 << 17
#: The target: CPU per scrape at this many open sockets (issue 13), and RSS against idle.
TARGET_SOCKETS, TARGET_SCRAPE_MS, TARGET_RSS_RATIO = 72000, 50.0, 1.25

#: One holder: argv[2] connections to its own listener from address argv[1], held until stdin says so.
#: Each moves a little payload each way first, as a connection kept open for reuse has.
HOLDER = """
import resource, socket, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
source, count = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.bind((source, 0))
listener.listen(4096)
pairs = []
for _ in range(count):
    client = socket.socket()
    client.bind((source, 0))
    client.connect(listener.getsockname())
    client.sendall(b"q" * 100)
    server = listener.accept()[0]
    server.sendall(b"r" * 200)
    pairs.append((client, server))
print("ready", flush=True)
sys.stdin.readline()
"""

#: The flows: one socket sends a 20-byte datagram to each of argv[1] ports: a client flow sent and a
#: server flow received for each, on loopback.
SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
for port in range(10000, 10000 + int(sys.argv[1])):
    s.sendto(b"f" * 20, ("127.0.0.1", port))
"""


class Holders:
    """Helper processes in the namespace holding `sockets` open TCP sockets (both ends of sockets / 2)."""

    def __init__(self, ns: Namespace, sockets: int):
        connections, self.processes = sockets // 2, []
        for index in range(-(-connections // PER_HOLDER)):
            count = min(PER_HOLDER, connections - index * PER_HOLDER)
            self.processes.append(subprocess.Popen([*ns.exec_prefix, sys.executable, "-c", HOLDER,
                                                    f"127.0.{index // 250}.{2 + index % 250}", str(count)],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for process in self.processes:
            if process.stdout.readline().strip() != "ready":
                self.close()
                raise RuntimeError(f"a socket holder failed (exit status {process.wait()})")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _scrapes(gespann: GespannMetrics, pid: int) -> dict:
    """The first scrape after the state was made, then SCRAPES more: each one's wall time, and gespann's
    CPU, the first one's alone and the others' per scrape. The CPU is the process's utime + stime: the
    server answers each request on a thread that ends with it, so per-thread counters would miss it.

    Why the first apart: it meets every connection that moved payload for the first time, and makes
    its socket storage (about a microsecond each, once per connection). Every later scrape is what a
    scrape costs while that many stay open, the figure the target is about."""
    def timed() -> tuple[float, float]:
        before, started = procfs.usage(pid).cpu_s, time.perf_counter()
        if gespann.scrape(timeout_s=60) is None:
            raise RuntimeError(f"gespann stopped answering on {gespann.url}")
        return (procfs.usage(pid).cpu_s - before) * 1000, (time.perf_counter() - started) * 1000

    first_cpu_ms, first_wall_ms = timed()
    before = procfs.usage(pid).cpu_s
    wall_ms = [timed()[1] for _ in range(SCRAPES)]
    cpu_ms = (procfs.usage(pid).cpu_s - before) * 1000 / SCRAPES
    return {"cpu_ms": [cpu_ms], "wall_ms": wall_ms, "rss_mib": _rss_mib(pid),
            "first_cpu_ms": first_cpu_ms, "first_wall_ms": first_wall_ms}


def _ss(ns: Namespace) -> dict:
    """`ss -tin` in the namespace: its CPU and wall time, process start included."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([*ns.exec_prefix, "ss", "-tin"], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"cpu_ms": cpu * 1000, "wall_ms": (time.perf_counter() - started) * 1000}


def _batch_read_floor(entries: int) -> dict:
    """A batch read of a flow map as large as gespann's with `entries` flows, keys and values left raw."""
    from gespann.bpf.maps import LruHashMap
    from gespann.probes.udp.flows import FLOW, KEY

    if not entries:
        return {"cpu_ms": 0.0, "wall_ms": 0.0}
    with LruHashMap(KEY.size, FLOW.size, FLOW_MAP, name="gsp_bench_floor") as flows:
        value = bytes(FLOW.size)
        for index in range(entries):
            flows[index.to_bytes(4, "little") + bytes(KEY.size - 4)] = value
        cpu, wall = time.process_time(), time.perf_counter()
        assert len(flows.lookup_batch()) == entries
        return {"cpu_ms": (time.process_time() - cpu) * 1000, "wall_ms": (time.perf_counter() - wall) * 1000}


def run(executable: Path, workdir: Path, say: Callable[[str], None]) -> dict:
    """Every state measured: {"sockets": [...], "flows": [...]}, each entry the state's figures."""
    results: dict = {"sockets": [], "flows": []}
    with Namespace() as ns:
        gespann = GespannMetrics(executable, workdir, ns.path)
        gespann.config.write_text(gespann.config.read_text() + f"limits:\n  udp_flows: {FLOW_MAP}\n")
        launched, _ = gespann.start()
        try:
            for sockets in SOCKETS:
                holders = Holders(ns, sockets)
                try:
                    figures = {"state": sockets, **_scrapes(gespann, launched.pid), "ss": _ss(ns)}
                finally:
                    holders.close()
                results["sockets"].append(figures)
                say(f"scale: {sockets} sockets: {min(figures['cpu_ms']):.0f} ms of CPU per scrape")
            for flows in FLOWS:
                if flows:
                    subprocess.run([*ns.exec_prefix, sys.executable, "-c", SENDER, str(flows // 2)], check=True)
                figures = {"state": flows, **_scrapes(gespann, launched.pid), "floor": _batch_read_floor(flows)}
                results["flows"].append(figures)
                say(f"scale: {flows} flows: {min(figures['cpu_ms']):.0f} ms of CPU per scrape")
        finally:
            launched.stop()
    return results


def markdown(scale: dict) -> list[str]:
    """The scale table, and the targets judged."""
    measured = scale.get("measured", {})
    lines = ["", "### Scale: one scrape of `gespann run` as open sockets and UDP flows grow", "",
             f"Measured {measured.get('date', '?')} on kernel {measured.get('kernel', '?')}, "
             f"{measured.get('cpus', '?')} CPUs, commit {measured.get('commit', '?')}. "
             f"{SCRAPES} scrapes per state after its first: gespann's own CPU per scrape (their mean: the "
             "kernel counts it in 10 ms ticks), the median wall time; then the first scrape after the state "
             "was made alone (it makes the socket storage of each connection that moved payload, once); "
             "the floor beside them: "
             "`ss -tin` for sockets (process start included), a batch read of a map as large for flows.", "",
             "| state | gespann CPU per scrape (ms) | wall (ms) | first scrape CPU (ms) | gespann RSS (MiB) "
             "| floor CPU (ms) | floor wall (ms) |",
             "|---|---|---|---|---|---|---|"]
    idle_rss = None
    for kind, floor in (("sockets", "ss"), ("flows", "floor")):
        for figures in scale.get(kind, []):
            idle_rss = idle_rss or figures["rss_mib"]
            cpu, wall = spread(figures["cpu_ms"]), spread(figures["wall_ms"])
            lines.append(f"| {figures['state']:,} {'open sockets' if kind == 'sockets' else 'UDP flows'} | "
                         f"{cpu.median:.1f} | {wall.median:.1f} | {figures.get('first_cpu_ms', float('nan')):.0f} | "
                         f"{figures['rss_mib']:.1f} | {figures[floor]['cpu_ms']:.1f} | "
                         f"{figures[floor]['wall_ms']:.1f} |")
    lines.append("")
    for verdict in verdicts(scale).items():
        lines.append(f"- {verdict[0]}: {'met' if verdict[1] else 'MISSED'}")
    return lines


def verdicts(scale: dict) -> dict[str, bool]:
    """Target -> met, for what the scale section measured."""
    sockets = {figures["state"]: figures for figures in scale.get("sockets", [])}
    out = {}
    if TARGET_SOCKETS in sockets:
        cpu = spread(sockets[TARGET_SOCKETS]["cpu_ms"]).median
        out[f"at most {TARGET_SCRAPE_MS:.0f} ms of CPU per scrape at {TARGET_SOCKETS:,} open sockets "
            f"(measured {cpu:.0f} ms)"] = cpu <= TARGET_SCRAPE_MS
    every = [f for kind in ("sockets", "flows") for f in scale.get(kind, [])]
    if every and every[0]["state"] == 0:
        idle, largest = every[0]["rss_mib"], max(f["rss_mib"] for f in every)
        out[f"RSS at most {TARGET_RSS_RATIO}x idle at every state (measured {largest / idle:.2f}x)"] = \
            largest <= TARGET_RSS_RATIO * idle
    return out
