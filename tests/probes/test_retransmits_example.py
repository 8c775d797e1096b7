"""The retransmissions example, a probe written outside gespann's tree: it imports only the authoring module,
loads from the config's `extra_probes`, and counts what the kernel counts.

Retransmissions are forced in the test's own namespace: an nftables rule on the input hook drops every
n-th data packet to each server port (loopback's sender never hears of it, so each loss is recovered by a
real retransmission). Loopback's MTU is 1500, so one packet carries several segments (GSO) and a
retransmitted buffer counts all of them, as RetransSegs does. The oracles are the kernel's: the namespace's
Tcp RetransSegs (less TcpExt TCPRetransFail) for the sum, and each connection's own tcpi_total_retrans,
read by the application, for each port.
"""
from __future__ import annotations

import ast
import json
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from probe_flavours import FLAVOURS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probes" / "tcp_retransmits_by_port.py"
PROBE_NAME, METRIC = "tcp_retransmits_by_port", "tcp_retransmitted_segments_by_remote_port_total"
#: Each server port loses every n-th data packet the client sends it: different rates, different counts.
DROP_EVERY = (5, 7, 11)
CONNECTIONS, PAYLOAD = 3, 256 * 1024  # per port; each connection sends PAYLOAD bytes
TIMEOUT = 20.0  # seconds any socket call may block: a bound, never reached when the kernel recovers
#: Where struct tcp_info keeps tcpi_total_retrans: after 8 bytes of u8 fields, the 24th u32.
TCPI_TOTAL_RETRANS = 8 + 23 * 4


def test_the_example_imports_only_the_authoring_module():
    imported = set()
    for node in ast.walk(ast.parse(EXAMPLE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    gespann = {name for name in imported if name.split(".")[0] in ("gespann", "asm")}
    assert gespann == {"gespann.probes.authoring"}, f"the example imports {sorted(gespann)}"


def test_the_example_loads_from_the_config_with_its_metric_and_flavours():
    from gespann.config import parse
    from gespann.probes import load_probes

    config = parse({"extra_probes": [str(EXAMPLE)]})
    (probe,) = load_probes(config.extra_probes[0])
    assert probe.name == PROBE_NAME and [spec.name for spec in probe.metrics] == [METRIC]
    assert [flavour.mode for flavour in probe.flavours] == ["tp_btf", "raw_tracepoint", "tracepoint"]


# --- in the kernel ---------------------------------------------------------------------------------------

#: Seconds nft or ip may take: the first nft rule in a guest under emulation loads nf_tables, which took over 30 s.
COMMAND_TIMEOUT = 180


def nft(rules: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True, timeout=COMMAND_TIMEOUT)


def drop_data_packets(every: dict[int, int]) -> None:
    """In the current namespace: drop every `every[port]`-th packet with payload to each port, on input
    (IPv4 length over 200 bytes: no SYN, pure ACK or bare FIN is that long)."""
    rules = ["add table inet gespann_rtx",
             "add chain inet gespann_rtx in { type filter hook input priority 0; }"]
    rules += [f"add rule inet gespann_rtx in ip length > 200 tcp dport {port} numgen inc mod {n} == 0 counter drop"
              for port, n in every.items()]
    nft("\n".join(rules) + "\n")


def dropped_packets() -> int:
    listing = json.loads(subprocess.run(["nft", "-j", "list", "chain", "inet", "gespann_rtx", "in"],
                                        capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT).stdout)
    return sum(expression["counter"]["packets"] for item in listing["nftables"]
               for expression in item.get("rule", {}).get("expr", []) if "counter" in expression)


def loopback_mtu(mtu: int) -> None:
    subprocess.run(["ip", "link", "set", "lo", "mtu", str(mtu)], check=True, timeout=COMMAND_TIMEOUT)


def total_retrans(sock: socket.socket) -> int:
    """The kernel's count of segments this connection retransmitted (tcp_info.tcpi_total_retrans)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_TOTAL_RETRANS + 4)
    return struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0]


def transfer(listener: socket.socket, retransmitted: Counter) -> None:
    """One connection: the client sends PAYLOAD bytes, the server answers one byte once it has them all,
    then both close. What each side retransmitted is added under its peer's port, read once the
    connection's data is acknowledged (the client's by the server's answer)."""
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    server, _ = listener.accept()
    server.settimeout(TIMEOUT)
    sender = threading.Thread(target=client.sendall, args=(b"r" * PAYLOAD,))  # more than the buffers hold
    sender.start()
    received = 0
    while received < PAYLOAD:
        chunk = server.recv(1 << 16)
        assert chunk, "the client's data stopped short"
        received += len(chunk)
    sender.join(TIMEOUT)
    server.sendall(b"k")
    assert client.recv(1) == b"k"
    retransmitted[port] += total_retrans(client)
    client.close()
    assert server.recv(1) == b""
    retransmitted[server.getpeername()[1]] += total_retrans(server)
    server.close()


def run_traffic(listeners: list[socket.socket]) -> Counter:
    """CONNECTIONS transfers to each listener; what each connection retransmitted, by its peer's port."""
    retransmitted: Counter = Counter()
    for listener in listeners:
        for _ in range(CONNECTIONS):
            transfer(listener, retransmitted)
    return +retransmitted  # ports that retransmitted nothing have no series either


def listeners(n: int) -> list[socket.socket]:
    made = []
    for _ in range(n):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(CONNECTIONS)
        listener.settimeout(TIMEOUT)
        made.append(listener)
    return made


def retransmissions_in(namespace, ports: int, drop_every) -> tuple[Counter, int, int]:
    """Traffic to `ports` servers in `namespace` with drops; (the oracle by port, RetransSegs less
    TCPRetransFail over the traffic, packets dropped)."""
    import mib

    with namespace.enter():
        loopback_mtu(1500)
        servers = listeners(ports)
        drop_data_packets({server.getsockname()[1]: n for server, n in zip(servers, drop_every)})
        before = mib.counters()
        try:
            by_port = run_traffic(servers)
        finally:
            for server in servers:
                server.close()
        after = mib.counters()
        dropped = dropped_packets()
    segments = ((after["Tcp"]["RetransSegs"] - before["Tcp"]["RetransSegs"])
                - (after["TcpExt"]["TCPRetransFail"] - before["TcpExt"]["TCPRetransFail"]))
    return by_port, segments, dropped


def series_by_port(collector, expected_total: int) -> tuple[dict[str, int], int]:
    """The metric's series as {remote_port: segments}, once their sum reaches `expected_total` (the counts
    are made in the kernel as the retransmissions happen; this only bounds a slow reader), and the runs of
    the probe's program the kernel says it skipped (probe_runs_missed_total), for the failure message."""
    deadline = time.monotonic() + 5
    while True:
        snapshot = collector.snapshot()
        series = {dict(labels)["remote_port"]: n for labels, n in snapshot[METRIC].series.items()}
        if sum(series.values()) >= expected_total or time.monotonic() > deadline:
            return series, snapshot["probe_runs_missed_total"].value(probe=PROBE_NAME)
        time.sleep(0.05)


@pytest.mark.root
@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_retransmitted_segments_by_remote_port_are_exact(namespace, mode, perf_event_link, needed):
    from kernel_features import require

    from gespann.collector.collector import KernelCollector
    from gespann.config import parse
    from gespann.probes import AttachSettings, ProbeSet, load_probes

    require(*(feature() for feature in needed))
    if mode not in [flavour.mode for flavour in load_probes(str(EXAMPLE))[0].flavours]:
        pytest.skip(f"n/a: the example has no {mode} flavour: it hooks the tracepoint tcp:tcp_retransmit_skb")
    config = parse({"extra_probes": [str(EXAMPLE)], "scope": {"netns": namespace.path},
                    "attach": {"probes": {PROBE_NAME: mode}, "perf_event": perf_event_link}})
    with ProbeSet.attach(load_probes(config.extra_probes[0]), AttachSettings.from_config(config)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        assert probes[PROBE_NAME].flavour.mode == mode
        by_port, segments, dropped = retransmissions_in(namespace, len(DROP_EVERY), DROP_EVERY)
        series, missed = series_by_port(collector, segments)
    expected = {str(port): n for port, n in by_port.items()}
    figures = (f"probe {series}, connections {expected}, RetransSegs less TCPRetransFail {segments}, "
               f"runs the kernel skipped {missed}")
    assert dropped > 0 and segments > 0, "the drops forced no retransmission"
    assert sum(series.values()) == segments, f"the sum is the namespace's count: {figures}"
    assert series == expected, f"each port as its connections counted: {figures}"


@pytest.mark.root
def test_ports_past_the_capacity_count_as_other_and_the_sum_stays_exact(namespace):
    import dataclasses
    import runpy

    from gespann.collector.collector import KernelCollector
    from gespann.probes import AttachSettings, ProbeSet
    from gespann.probes.authoring import U32, capped_count_maps

    example = runpy.run_path(str(EXAMPLE))
    small = dataclasses.replace(example["PROBE"], maps=capped_count_maps(example["PORTS"], example["OVERFLOW"],
                                                                           U32, 2, "rtx_port"))
    with ProbeSet.attach([small], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        by_port, segments, _ = retransmissions_in(namespace, 4, (3, 4, 5, 6))
        series, missed = series_by_port(collector, segments)
    figures = (f"probe {series}, connections {dict(by_port)}, RetransSegs less TCPRetransFail {segments}, "
               f"runs the kernel skipped {missed}")
    assert len(by_port) >= 3, f"retransmissions to {len(by_port)} ports: too few to fill the map"
    other = series.pop("other")
    assert len(series) == 2, f"the two ports the map holds: {figures}"
    for port, n in series.items():
        assert by_port[int(port)] == n, f"port {port} as its connections counted: {figures}"
    assert other == sum(by_port.values()) - sum(series.values()) > 0, f"the rest counts as other: {figures}"
    assert other + sum(series.values()) == segments, f"the sum is the namespace's count: {figures}"
