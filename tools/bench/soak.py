"""The soak: `gespann run` for a long time (an hour in `make bench`) under the highest loopback connection rate
this machine gives, with connection records (jsonl) and per-process labels on.

What it shows: whether gespann's memory stays flat (RSS sampled every few seconds, its growth from the
first steady quarter to the last, and a least-squares slope), whether every record arrives (lines read
against the kernel's count of connection ends, and gespann's own count of records lost), and whether the
metrics are still exact at the end, against the namespace's /proc/net/snmp.

The records go to a named pipe the soak reads and counts, not to a file: an hour at this rate writes tens
of gigabytes. Reading a pipe costs the soak little (a count of newlines per 1 MiB); a reader too slow would
show as records lost, so the figure would be against gespann, never in its favour.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import loadgen
from .counts import Counts
from .gespann_tracer import STARTUP_TIMEOUT_S, counts_from_metrics, free_port
from .namespace import Namespace
from .process import Launched

MIB = 1 << 20
#: Seconds between RSS samples; one load generator run lasts at most CHUNK_S.
SAMPLE_S = 5
CHUNK_S = 60
#: RSS is flat when the last quarter's median is within this of the first steady quarter's (after warm-up).
FLAT_MIB = 4.0
SETTLE_S = 60
#: After a load generator run, how long its last connections' ends may take to be counted.
CHECKPOINT_SETTLE_S = 3


class RecordCounter:
    """Reads the named pipe gespann writes its jsonl records to: counts lines, and checks one line in a
    thousand parses as JSON with the fields of a record."""

    def __init__(self, fifo: Path):
        self.fifo = fifo
        self.lines = 0
        self.bad = 0
        self.bytes = 0
        self._thread = threading.Thread(target=self._read, name="soak-records", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self.fifo, "rb") as pipe:
            rest = b""
            while chunk := pipe.read1(MIB):
                self.bytes += len(chunk)
                newlines = chunk.count(b"\n")
                if newlines and (self.lines // 1000) != ((self.lines + newlines) // 1000):
                    self._check(rest + chunk)
                self.lines += newlines
                rest = chunk[chunk.rfind(b"\n") + 1:] if newlines else rest + chunk

    def _check(self, data: bytes) -> None:
        complete = data[:data.rfind(b"\n")].rsplit(b"\n", 1)[-1]
        try:
            record = json.loads(complete)
            if not {"outcome", "role", "pid"} <= record.keys():
                self.bad += 1
        except ValueError:
            self.bad += 1

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def _tcp_counters(namespace: Namespace) -> dict[str, int]:
    lines = subprocess.run([*namespace.exec_prefix, "cat", "/proc/net/snmp"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    tcp = [line.split()[1:] for line in lines if line.startswith("Tcp:")]
    return dict(zip(tcp[0], (int(n) for n in tcp[1])))


def _sockets_left(namespace: Namespace) -> dict[str, int]:
    """TCP sockets of the namespace not yet closed, by state (LISTEN and TIME-WAIT left out: a time-wait
    socket's connection has ended): a connection the counts miss at the end may just not be over."""
    out = subprocess.run([*namespace.exec_prefix, "ss", "-Htan"], capture_output=True, text=True, check=True).stdout
    states: dict[str, int] = {}
    for line in out.splitlines():
        state = line.split()[0]
        if state not in ("LISTEN", "TIME-WAIT"):
            states[state] = states.get(state, 0) + 1
    return states


def _config(port: int, fifo: Path, netns: str) -> str:
    return "\n".join(["log_level: info", "exporters:",
                      f"  - {{type: prometheus, settings: {{port: {port}, address: 127.0.0.1}}}}",
                      f"  - {{type: jsonl, settings: {{path: {fifo}}}}}",
                      "labels: {process: true}", f"scope: {{netns: {netns}}}", ""])


def _samples(text: str, name: str) -> float:
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _series(text: str, name: str) -> dict[str, float]:
    """{'{labels}': value} of one metric's series."""
    return {line[len(name):].rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines()
            if line.startswith(name + "{")}


def _by_role(text: str, name: str) -> dict[str, float]:
    """{role: value} of a metric labelled by role (client, server)."""
    found: dict[str, float] = {}
    for labels, value in _series(text, name).items():
        role = labels.partition('role="')[2].partition('"')[0]
        found[role] = found.get(role, 0) + value
    return found


def slope_mib_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    ts, rs = [t for t, _ in samples], [r / MIB for _, r in samples]
    mean_t, mean_r = statistics.fmean(ts), statistics.fmean(rs)
    spread = sum((t - mean_t) ** 2 for t in ts)
    return 0.0 if not spread else sum((t - mean_t) * (r - mean_r) for t, r in zip(ts, rs)) / spread * 3600


def rss_figures(samples: list[tuple[float, int]]) -> dict:
    """Growth from the first steady quarter to the last (the first tenth is warm-up), and the slope over them."""
    steady = samples[len(samples) // 10:]
    quarter = max(1, len(steady) // 4)
    first = statistics.median(r for _, r in steady[:quarter]) if steady else 0
    last = statistics.median(r for _, r in steady[-quarter:]) if steady else 0
    return {"rss_first_quarter_mib": first / MIB, "rss_last_quarter_mib": last / MIB,
            "rss_growth_mib": (last - first) / MIB, "rss_max_mib": max((r for _, r in samples), default=0) / MIB,
            "rss_slope_mib_per_hour": slope_mib_per_hour(steady)}


def run(gespann: Path, workdir: Path, binary: Path, seconds: float, threads: int,
        say: Callable[[str], None]) -> dict:
    fifo = workdir / "soak-records.jsonl"
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo)
    port = free_port()
    config = workdir / "gespann-soak.yaml"
    url = f"http://127.0.0.1:{port}/metrics"
    with Namespace() as ns:
        config.write_text(_config(port, fifo, ns.path))
        records = RecordCounter(fifo)
        tcp_before = _tcp_counters(ns)
        with Launched([str(gespann), "run", "--config", str(config)]) as launched:
            launched.wait_ready(lambda: _scrape(url) is not None, STARTUP_TIMEOUT_S)
            rss: list[tuple[float, int]] = []
            started = time.monotonic()
            stop_sampling = threading.Event()

            def sample() -> None:
                while not stop_sampling.wait(SAMPLE_S):
                    rss.append((time.monotonic() - started, _rss_bytes(launched.pid)))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            connections = runs = 0
            checkpoints: list[dict] = []
            cpu_before = launched.usage().cpu_s
            while (left := seconds - (time.monotonic() - started)) > 1:
                result = loadgen.run(binary, 10 ** 9, min(CHUNK_S, left), threads, ns.exec_prefix)
                connections += result.connections
                runs += 1
                checkpoints.append(_checkpoint(url, ns, tcp_before, time.monotonic() - started))
                say(f"soak: {time.monotonic() - started:.0f}/{seconds:.0f} s, {result.per_second:.0f} "
                    f"connections/s, RSS {rss[-1][1] / MIB if rss else 0:.1f} MiB, {records.lines} records")
            load_s = time.monotonic() - started
            cpu_s = launched.usage().cpu_s - cpu_before
            stop_sampling.set()
            sampler.join()
            tcp_after = _tcp_counters(ns)
            opened = tcp_after["ActiveOpens"] - tcp_before["ActiveOpens"]
            passive = tcp_after["PassiveOpens"] - tcp_before["PassiveOpens"]
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline:
                page = _scrape(url) or ""
                lost = _samples(page, "gespann_records_lost_total")
                unseen = _samples(page, "gespann_connection_ends_unseen_total")
                if records.lines + lost + unseen >= 2 * opened and _ends_accounted(page, opened, passive):
                    break
                time.sleep(0.5)
            page = _scrape(url) or ""
            left = _sockets_left(ns)
            status = launched.stop()
        records.join(30)
    counts: Counts = counts_from_metrics(page)
    exact = (counts.opened_client == counts.closed_client == opened and counts.resets == counts.failed == 0
             and counts.opened_server == counts.closed_server == passive)
    unseen = _by_role(page, "gespann_connection_ends_unseen_total")
    return {
        "seconds": load_s, "loadgen_runs": runs, "connections": connections, "per_second": connections / load_s,
        "active_opens": opened, "passive_opens": passive, "counted": dataclasses.asdict(counts), "counted_exact": exact,
        "by_process": _samples(page, "gespann_process_connections_total"),
        "records": records.lines, "records_bad": records.bad, "records_bytes": records.bytes,
        "records_lost": _samples(page, "gespann_records_lost_total"), "records_expected": 2 * opened,
        "records_lost_by_reader": _series(page, "gespann_records_lost_total"),
        "untracked": _samples(page, "gespann_connection_ends_untracked_total"),
        "runs_missed": _samples(page, "gespann_probe_runs_missed_total"),
        "unseen_ends": unseen, "opens_unseen": _samples(page, "gespann_connection_opens_unseen_total"),
        "ends_accounted": _ends_accounted(page, opened, passive),
        "gespann_cpu_s": cpu_s, "exit_status": status, "sockets_left": left,
        "rss_samples": [(round(t, 1), r) for t, r in rss], **rss_figures(rss),
        "runs_missed_by_probe": _series(page, "gespann_probe_runs_missed_total"), "checkpoints": checkpoints,
    }


def _ends_accounted(page: str, opened: int, passive: int) -> bool:
    """Whether every end is counted, as closed or as unseen (gespann_connection_ends_unseen_total: no run of
    tcp_lifecycle saw that CLOSE, and the socket's free found the entry), and nothing else happened."""
    counts, unseen = counts_from_metrics(page), _by_role(page, "gespann_connection_ends_unseen_total")
    return (counts.opened_client == opened and counts.opened_server == passive and counts.resets == counts.failed == 0
            and counts.closed_client + unseen.get("client", 0) == opened
            and counts.closed_server + unseen.get("server", 0) == passive)


def _checkpoint(url: str, namespace: Namespace, tcp_before: dict[str, int], at_s: float) -> dict:
    """The counts after one load generator run, against the kernel's: where in the soak a shortfall began,
    and what the kernel said of the programs' runs by then (each probe's skipped runs)."""
    deadline = time.monotonic() + CHECKPOINT_SETTLE_S
    while True:
        tcp = _tcp_counters(namespace)
        page = _scrape(url) or ""
        counts = counts_from_metrics(page)
        opened = tcp["ActiveOpens"] - tcp_before["ActiveOpens"]
        passive = tcp["PassiveOpens"] - tcp_before["PassiveOpens"]
        if _ends_accounted(page, opened, passive) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    unseen = _by_role(page, "gespann_connection_ends_unseen_total")
    return {"at_s": round(at_s, 1), "active_opens": opened, "passive_opens": passive,
            "closed_client": counts.closed_client, "closed_server": counts.closed_server,
            "unseen_client": unseen.get("client", 0), "unseen_server": unseen.get("server", 0),
            "untracked": _samples(page, "gespann_connection_ends_untracked_total"),
            "runs_missed_by_probe": _series(page, "gespann_probe_runs_missed_total")}


def shortfalls(soak: dict) -> list[dict]:
    """The checkpoints at which the ends counted fell further behind the kernel's count."""
    found, before = [], (0, 0)
    for point in soak.get("checkpoints", []):
        short = (point["active_opens"] - point["closed_client"], point["passive_opens"] - point["closed_server"])
        if short != before:
            found.append({**point, "short_client": short[0], "short_server": short[1]})
        before = short
    return found


def _scrape(url: str) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            return page.read().decode()
    except OSError:
        return None


def verdicts(soak: dict) -> dict[str, bool | None]:
    return {
        f"RSS flat (last quarter within {FLAT_MIB:g} MiB of the first steady one)": soak["rss_growth_mib"] <= FLAT_MIB,
        "no record lost, every record read": soak["records_lost"] == 0 and soak["records"] == soak["records_expected"]
        and soak["records_bad"] == 0,
        "metrics exact against /proc/net/snmp": soak["counted_exact"],
        "every end counted, closed or said unseen (gespann_connection_ends_unseen_total)": soak.get("ends_accounted"),
        "every record read, or its loss counted (records lost, unseen ends)": _records_accounted(soak),
    }


def _records_accounted(soak: dict) -> bool | None:
    """Records read, plus those counted lost, plus one per unseen end (its record went with the skipped run)."""
    if "unseen_ends" not in soak:
        return None
    accounted = soak["records"] + soak["records_lost"] + sum(soak["unseen_ends"].values())
    return soak["records_bad"] == 0 and accounted == soak["records_expected"]


def _count(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:,.0f}"


def _unseen_cells(soak: dict) -> str:
    if "unseen_ends" not in soak:
        return "not recorded"
    unseen = soak["unseen_ends"]
    return f"{unseen.get('client', 0):,.0f} / {unseen.get('server', 0):,.0f}; {soak['opens_unseen']:,.0f}"


def _shortfall_cells(soak: dict) -> str:
    if "checkpoints" not in soak:
        return "not recorded"
    found = shortfalls(soak)
    if not found:
        return f"never, at {len(soak['checkpoints'])} checkpoints"
    return "; ".join(f"{p['at_s']:.0f} s: {p['short_client']} / {p['short_server']} (unseen "
                     f"{_count(p.get('unseen_client'))} / {_count(p.get('unseen_server'))}), "
                     + (", ".join(f"{k} {v:,.0f}" for k, v in p["runs_missed_by_probe"].items()) or "none")
                     for p in found)


def _count(value: float | None) -> str:
    """A count read from the exposition (a float), as a whole number; "?" where not recorded."""
    return "?" if value is None else f"{value:,.0f}"


def markdown(soak: dict) -> list[str]:
    measured = soak.get("measured", {})
    counted = soak["counted"]
    length = f"{soak['seconds'] / 60:.0f} minutes" if soak["seconds"] >= 120 else f"{soak['seconds']:.0f} s"
    lines = ["", f"### Soak: {length} at the highest loopback connection rate, "
                 "records (jsonl) and per-process labels on", "",
             f"Measured {measured.get('date', '?')} on kernel {measured.get('kernel', '?')}, "
             f"{measured.get('cpus', '?')} CPUs, commit {measured.get('commit', '?')}, load average "
             f"{measured.get('load_before', '?')} before. {soak['connections']:,} connections "
             f"({soak['per_second']:,.0f} a second, {soak['loadgen_runs']} load generator runs); gespann used "
             f"{soak['gespann_cpu_s']:.0f} s of CPU ({soak['gespann_cpu_s'] * 1e6 / max(1, soak['connections']):.0f} "
             "µs a connection). Records went to a named pipe the bench read.", "",
             "| figure | measured |", "|---|---|",
             f"| RSS: first steady quarter → last quarter (median) | {soak['rss_first_quarter_mib']:.1f} → "
             f"{soak['rss_last_quarter_mib']:.1f} MiB ({soak['rss_growth_mib']:+.1f} MiB; max "
             f"{soak['rss_max_mib']:.1f}; slope {soak['rss_slope_mib_per_hour']:+.2f} MiB/hour over "
             f"{len(soak['rss_samples'])} samples) |",
             f"| records read / expected (2 per connection) | {soak['records']:,} / {soak['records_expected']:,} "
             f"(malformed: {soak['records_bad']}) |",
             f"| records lost (gespann_records_lost_total) | {soak['records_lost']:,.0f} "
             f"{' '.join(f'{k} {v:,.0f}' for k, v in soak.get('records_lost_by_reader', {}).items())} |",
             f"| records read + counted lost, against expected | "
             f"{soak['records'] + soak['records_lost']:,.0f} / {soak['records_expected']:,} |",
             f"| opened client / server, counted vs /proc/net/snmp ActiveOpens / PassiveOpens | "
             f"{counted['opened_client']:,} / {counted['opened_server']:,} vs {soak['active_opens']:,} / "
             f"{soak['passive_opens']:,} |",
             f"| closed client / server; by process (sum) | {counted['closed_client']:,} / "
             f"{counted['closed_server']:,}; {soak['by_process']:,.0f} |",
             f"| ends without gespann's entry (gespann_connection_ends_untracked_total); program runs the kernel "
             f"skipped (gespann_probe_runs_missed_total) | {_count(soak.get('untracked'))}; "
             f"{_count(soak.get('runs_missed'))} |",
             f"| ends unseen, client / server (gespann_connection_ends_unseen_total); active opens unseen | "
             f"{_unseen_cells(soak)} |",
             f"| where the ends fell short (after a load generator run: seconds in, short client / server, "
             f"runs skipped by probe) | {_shortfall_cells(soak)} |",
             f"| TCP sockets of the namespace not closed at the end (not LISTEN, not TIME-WAIT) | "
             f"{soak.get('sockets_left') or 'none'} |", ""]
    lines += [f"- {target}: {'not recorded' if met is None else 'met' if met else 'MISSED'}"
              for target, met in verdicts(soak).items()]
    return lines
