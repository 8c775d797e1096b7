"""The metrics page of a real `gespann run` under heavy and hostile clients, over real sockets.

Fifty simultaneous scrapes; 2,000 idle connections and then 300 slowloris
ones; a process out of file descriptors. The figures come from
tools/endpoint_attack.py, which measures Debian's node_exporter the same way
(printed beside gespann's, for the record; only gespann's are judged).

The machine has two CPUs shared with other work, whose load makes a scrape's
time swing threefold between identical conditions. So a latency bound is met
by the best of a few rounds, and a scrape's own cost is the fastest of many:
what a broken server does (a full backlog's one-second SYN retransmission, a
thread per connection, a loop spinning on EMFILE) fails every round alike.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_server import free_port
from served_gespann import DEFAULT_OPEN_FILES, GespannProcess

from gespann.exporters.page_server import ACCEPT_PAUSE_SECONDS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import endpoint_attack  # noqa: E402  (tools/ holds scripts, not a package)

pytestmark = [pytest.mark.root, pytest.mark.process]
MIB = 1 << 20
NODE_EXPORTER = shutil.which("prometheus-node-exporter")


@pytest.fixture(scope="module")
def gespann(tmp_path_factory):
    process = GespannProcess(tmp_path_factory.mktemp("gespann"))
    yield process
    err = process.stop()
    assert "Traceback" not in err


def test_gespann_raises_its_soft_open_files_limit_to_the_hard_one(gespann):
    """Started with the default soft limit of 1,024 (served_gespann.py), as a service without LimitNOFILE=."""
    soft, hard = resource.prlimit(gespann.pid, resource.RLIMIT_NOFILE)
    assert soft == hard > DEFAULT_OPEN_FILES
    assert gespann.sample("process_max_fds") == hard


def concurrency_limits(single_ms: float) -> tuple[float, float]:
    """(median, max) allowed for 50 simultaneous scrapes: 50 and 500 ms where one scrape alone takes up to 5 ms;
    where other work slows the machine down so that it takes longer, 10 and 20 times that scrape. (Served one
    thread per connection, the median was 300 times a single scrape, node_exporter's about 40 times.)"""
    return max(50.0, 10 * single_ms), max(500.0, 20 * single_ms)


def test_fifty_concurrent_scrapes_are_served_at_once(gespann):
    """Five rounds of 50 scrapes at once, judged beside a single scrape of the same try (the best of up to 4)."""
    tries = []
    for _ in range(4):
        figures = endpoint_attack.concurrency_figures(gespann.port, concurrent=50, rounds=5)
        median_limit, max_limit = concurrency_limits(figures["single_ms"])
        tries.append({**figures, "median_limit_ms": median_limit, "max_limit_ms": max_limit})
        if figures["median_ms"] <= median_limit and figures["max_ms"] <= max_limit and figures["answered_200"] == 250:
            break
    print(f"\ngespann, 50 concurrent scrapes: {json.dumps(tries)}")
    best = tries[-1]
    assert best["answered_200"] == best["count"] == 250, tries
    assert best["median_ms"] <= best["median_limit_ms"] and best["max_ms"] <= best["max_limit_ms"], tries


def test_idle_and_slow_clients_cost_no_thread_and_no_memory(gespann):
    """2,000 idle connections, then 300 sending one header byte every 5 s, held 12 s (past the request
    deadline): no thread more, RSS at most 5 MiB more, a scrape at most twice as long, RSS back within 2 MiB."""
    seen = {}

    def during(_attack):
        seen["open"] = gespann.sample("gespann_metrics_page_connections")

    tries = []
    for _ in range(2):
        figures = endpoint_attack.attack_figures(gespann.pid, gespann.port, idle=2000, slow=300, interval=5.0,
                                                 hold=12.0, during=during)
        tries.append(figures)
        if figures["attacked_scrape_fastest_ms"] <= 2 * figures["quiet_scrape_fastest_ms"]:
            break
    print(f"\ngespann under 2,000 idle and 300 slow connections: {json.dumps(tries)}")
    for figures in tries:
        assert figures["threads_during_max"] == figures["threads_before"] == figures["threads_after"], figures
        assert figures["rss_during_max_mib"] - figures["rss_before_mib"] <= 5, figures
        assert abs(figures["rss_after_mib"] - figures["rss_before_mib"]) <= 2, figures
    assert tries[-1]["attacked_scrape_fastest_ms"] <= 2 * tries[-1]["quiet_scrape_fastest_ms"], tries
    assert 1 <= seen["open"] <= 128  # the default max_connections, whatever the clients hold
    assert gespann.sample("gespann_metrics_page_connections_evicted_total") >= 2000 + 300 - 128
    assert gespann.sample('gespann_metrics_page_requests_total{code="200"}') > 0


def test_out_of_file_descriptors_the_server_waits_without_spinning_and_serves_again(gespann):
    """With no descriptor left, accept() fails with EMFILE: under 5 % of a core while clients wait; served
    once descriptors are free again; every failure counted."""
    before = gespann.sample('gespann_metrics_page_accept_errors_total{error="EMFILE"}')
    soft, hard = resource.prlimit(gespann.pid, resource.RLIMIT_NOFILE)
    waiting = []
    try:
        exhaust_descriptors(gespann.pid, hard)
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", gespann.port), timeout=10)
            client.sendall(endpoint_attack.request())
            waiting.append(client)
        time.sleep(0.5)
        cpu, wall = endpoint_attack.cpu_seconds(gespann.pid), time.monotonic()
        time.sleep(3)
        share = (endpoint_attack.cpu_seconds(gespann.pid) - cpu) / (time.monotonic() - wall)
        answered_meanwhile = sum(readable(client) for client in waiting)
    finally:
        resource.prlimit(gespann.pid, resource.RLIMIT_NOFILE, (soft, hard))
    started = time.monotonic()
    answers = []
    for client in waiting:
        answers.append(b"".join(iter(lambda: client.recv(1 << 16), b"")).split(b" ", 2)[1])
        client.close()
    served_after = time.monotonic() - started
    failures = gespann.sample('gespann_metrics_page_accept_errors_total{error="EMFILE"}') - before
    print(f"\ngespann out of descriptors: {share:.1%} of a core, {failures:.0f} accept() failures; the waiting "
          f"clients served {served_after:.2f}s after descriptors were free")
    assert share < 0.05 and answered_meanwhile == 0
    assert answers == [b"200"] * 20 and served_after < 5
    assert 1 <= failures <= 3 / ACCEPT_PAUSE_SECONDS + 5  # backing off: no more than one try per pause


def lowest_free_descriptor(pid: int) -> int:
    """A soft limit this low leaves a process no descriptor to open: every number below it is taken."""
    taken = {int(name) for name in os.listdir(f"/proc/{pid}/fd")}
    return next(number for number in range(len(taken) + 1) if number not in taken)


def readable(client: socket.socket) -> bool:
    """Whether the server has answered (or closed) the connection yet."""
    return bool(select.select([client], [], [], 0)[0])


def exhaust_descriptors(pid: int, hard: int) -> None:
    """The soft limit lowered to the lowest free descriptor until none frees below it (a descriptor closing
    just after the listing, the last scrape's socket say, would leave a hole for one accept)."""
    for _ in range(20):
        limit = lowest_free_descriptor(pid)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        time.sleep(0.2)
        if lowest_free_descriptor(pid) >= limit:
            return
    raise AssertionError(f"descriptors of {pid} keep closing: cannot exhaust them")


@pytest.mark.skipif(NODE_EXPORTER is None, reason="needs Debian's prometheus-node-exporter (tools/setup-host.sh)")
def test_node_exporter_measured_the_same_way(tmp_path):
    """node_exporter's figures in the same harness, for the record beside gespann's; only its health is asserted."""
    port = free_port()
    with (tmp_path / "node_exporter.log").open("w") as log:
        node = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while endpoint_attack.scrape(port, timeout=2).status != 200:
            assert node.poll() is None and time.monotonic() < deadline, (tmp_path / "node_exporter.log").read_text()
            time.sleep(0.2)
        figures = {"concurrency": endpoint_attack.concurrency_figures(port, concurrent=50, rounds=5),
                   "attack": endpoint_attack.attack_figures(node.pid, port, idle=2000, slow=300, interval=5.0,
                                                            hold=12.0)}
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    print(f"\nnode_exporter: {json.dumps(figures)}")
    assert figures["concurrency"]["answered_200"] > 0
