#!/usr/bin/env python3
"""What a metrics endpoint costs under heavy and hostile clients, measured from outside over real sockets.

The same figures for any exporter (gespann's page, node_exporter), so that the
tests (tests/exporters/test_endpoint_attack.py) judge gespann by them and put
node_exporter's beside them:

- `concurrent_scrapes`: N scrapes started at the same instant, each timed from
  its connect to the answer's last byte (one thread, non-blocking sockets, so
  the client is not what serializes them);
- `Attack`: idle connections that never send a byte, then slow ones that send
  one header byte every few seconds (reconnecting when the server drops them,
  as a slowloris does), held until closed;
- `process_figures` / `cpu_seconds`: threads, resident memory and CPU time of
  the server's process, from /proc.

    tools/endpoint_attack.py --pid PID --port PORT [--path /metrics] [--idle 2000] [--slow 300]

runs the whole sequence against a running server and prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import resource
import selectors
import socket
import statistics
import threading
import time
from typing import Optional

#: What Prometheus 2.x asks for.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def request(path: str = "/metrics", accept: str = PROMETHEUS_ACCEPT, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\nAccept-Encoding: gzip\r\n"
            f"Connection: close\r\n{extra}\r\n").encode()


@dataclasses.dataclass(frozen=True)
class Scrape:
    seconds: float
    status: int  # 0: no answer (refused, reset, timed out)


def scrape(port: int, path: str = "/metrics", host: str = "127.0.0.1", timeout: float = 10.0) -> Scrape:
    """One scrape, as Prometheus makes it, timed from connect to the answer's last byte."""
    return concurrent_scrapes(port, 1, path, host, timeout)[0]


def concurrent_scrapes(port: int, count: int, path: str = "/metrics", host: str = "127.0.0.1",
                       timeout: float = 10.0) -> list[Scrape]:
    """`count` scrapes whose connections all start at once; each ends at its answer's last byte."""
    selector = selectors.DefaultSelector()
    wanted = request(path)
    state = {}
    started = time.monotonic()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((host, port))
        state[sock] = {"start": time.monotonic(), "sent": False, "data": bytearray(), "end": None}
        selector.register(sock, selectors.EVENT_WRITE)
    open_count = count
    deadline = started + timeout
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(min(0.5, max(0.0, deadline - time.monotonic()))):
            sock, entry = key.fileobj, state[key.fileobj]
            try:
                if not entry["sent"]:
                    sock.send(wanted)
                    entry["sent"] = True
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                chunk = sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                entry["data"] += chunk
                continue
            entry["end"] = time.monotonic()
            selector.unregister(sock)
            sock.close()
            open_count -= 1
    results = []
    for sock, entry in state.items():
        if entry["end"] is None:
            selector.unregister(sock)
            sock.close()
            results.append(Scrape(timeout, 0))
            continue
        head = bytes(entry["data"][:64]).split(b" ", 2)
        status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
        results.append(Scrape(entry["end"] - entry["start"], status))
    selector.close()
    return results


def quiet_scrape_seconds(port: int, path: str = "/metrics", repeat: int = 9) -> float:
    """The median of `repeat` scrapes one after another: what one scrape takes on its own."""
    return statistics.median(scrape(port, path).seconds for _ in range(repeat))


def process_figures(pid: int) -> tuple[int, int]:
    """(threads, resident bytes) of a process, now."""
    threads = rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return threads, rss


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def raise_open_files_limit(needed: int) -> None:
    """This (the attacking) process holds thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


class Attack:
    """`idle` connections that send nothing, then `slow` ones sending one header byte every `interval` seconds
    from a thread; a slow connection the server dropped is opened again, at most once per interval."""

    def __init__(self, port: int, idle: int, slow: int, interval: float = 5.0, host: str = "127.0.0.1",
                 path: str = "/metrics"):
        raise_open_files_limit(idle + slow + 256)
        self._address = (host, port)
        self._head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
        self._interval = interval
        self.idle = [self._connect() for _ in range(idle)]
        self.slow: list[Optional[socket.socket]] = [self._connect(self._head) for _ in range(slow)]
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dribble, name="slowloris", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in (*self.idle, *self.slow):
            if sock is not None:
                sock.close()
        self.idle, self.slow = [], []

    def _connect(self, first: bytes = b"") -> Optional[socket.socket]:
        sock = socket.socket(socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(self._address)
            if first:
                sock.send(first)
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def _dribble(self) -> None:
        while not self._stop.wait(self._interval):
            for index, sock in enumerate(self.slow):
                if self._stop.is_set():
                    return
                try:
                    if sock is None:
                        raise ConnectionResetError(errno.ECONNRESET, "not connected")
                    sock.send(b"X")
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.slow[index] = self._connect(self._head)
                    self.reconnects += 1


def summary(scrapes: list[Scrape]) -> dict:
    seconds = [item.seconds for item in scrapes]
    return {"median_ms": round(statistics.median(seconds) * 1e3, 1), "max_ms": round(max(seconds) * 1e3, 1),
            "answered_200": sum(item.status == 200 for item in scrapes), "count": len(scrapes)}


def concurrency_figures(port: int, path: str = "/metrics", concurrent: int = 50, rounds: int = 5) -> dict:
    """A single scrape's time, then `rounds` of `concurrent` simultaneous scrapes, all of them summarized."""
    single = quiet_scrape_seconds(port, path)
    scrapes: list[Scrape] = []
    for _ in range(rounds):
        scrapes += concurrent_scrapes(port, concurrent, path)
        time.sleep(0.2)
    return {"single_ms": round(single * 1e3, 1), **summary(scrapes)}


def attack_figures(pid: int, port: int, path: str = "/metrics", idle: int = 2000, slow: int = 300,
                   interval: float = 5.0, hold: float = 12.0, during=None) -> dict:
    """Threads and RSS before, during and after `idle` then `slow` connections held for `hold` seconds, and a
    real scrape's time quiet (15 in a row) and during the attack (one every 0.25 s): the fastest of each, which
    is the server's own cost where other work shares the CPUs, and the median. `during(attack)`, if given, is
    called once the attack is in place."""
    for _ in range(20):  # warm: the first scrapes allocate what every later one reuses
        scrape(port, path)
    threads_before, rss_before = process_figures(pid)
    quiet = [scrape(port, path).seconds for _ in range(15)]
    attack = Attack(port, idle, slow, interval, path=path)
    try:
        peak_threads, peak_rss = process_figures(pid)
        if during is not None:
            during(attack)
        attacked: list[float] = []
        until = time.monotonic() + hold
        while time.monotonic() < until:
            attacked.append(scrape(port, path).seconds)
            threads, rss = process_figures(pid)
            peak_threads, peak_rss = max(peak_threads, threads), max(peak_rss, rss)
            time.sleep(0.25)
    finally:
        reconnects = attack.reconnects
        attack.close()
    time.sleep(3)  # the server sees every connection close
    for _ in range(5):
        scrape(port, path)
    threads_after, rss_after = process_figures(pid)
    mib = 1 << 20
    return {"threads_before": threads_before, "threads_during_max": peak_threads, "threads_after": threads_after,
            "rss_before_mib": round(rss_before / mib, 2), "rss_during_max_mib": round(peak_rss / mib, 2),
            "rss_after_mib": round(rss_after / mib, 2),
            "quiet_scrape_fastest_ms": round(min(quiet) * 1e3, 2),
            "quiet_scrape_median_ms": round(statistics.median(quiet) * 1e3, 2),
            "attacked_scrape_fastest_ms": round(min(attacked) * 1e3, 2),
            "attacked_scrape_median_ms": round(statistics.median(attacked) * 1e3, 2),
            "scrapes_during_attack": len(attacked), "slow_reconnects": reconnects}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the server's process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/metrics")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=300)
    arguments = parser.parse_args()
    figures = {"concurrency": concurrency_figures(arguments.port, arguments.path),
               "attack": attack_figures(arguments.pid, arguments.port, arguments.path, arguments.idle,
                                        arguments.slow)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
