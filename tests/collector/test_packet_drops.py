"""Why packets die: drops the test forces, counted by protocol and the kernel's reason, against the kernel's
own counters of the test's namespace (nftables counters, /proc/net/snmp).

Where the kernel passes no reason (before 5.17), every drop must count under `unknown`: the expected
reason comes from the running kernel's tracepoint, not from the test's hopes.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import time

import mib
import pytest
from namespaces import Namespace
from probe_flavours import FLAVOURS

from gespann.bpf.tracefs import read_format
from gespann.collector.collector import KernelCollector
from gespann.config import Config
from gespann.figures import labels
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.drops.packet_drops import PROBE

pytestmark = pytest.mark.root
PORT = 7777


def reason(name: str) -> str:
    """The label a drop of reason `name` must carry on this kernel: its name, or unknown without reasons."""
    has_reasons = any(field.name == "reason" for field in read_format("skb", "kfree_skb").fields)
    return name if has_reasons else "unknown"


def dropped(collector: KernelCollector) -> dict[tuple[str, str], int]:
    return {(dict(key)["protocol"], dict(key)["reason"]): value
            for key, value in collector.snapshot()["packets_dropped_total"].series.items() if value}


def nft(rules: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True, timeout=30)


def nft_counter_packets(chain: str) -> int:
    """Packets the counter of the first rule of `chain` (table inet gespann_drops) counted."""
    listing = json.loads(subprocess.run(["nft", "-j", "list", "chain", "inet", "gespann_drops", chain],
                                        capture_output=True, text=True, check=True, timeout=30).stdout)
    for item in listing["nftables"]:
        for expression in item.get("rule", {}).get("expr", []):
            if "counter" in expression:
                return expression["counter"]["packets"]
    raise AssertionError(f"no counter in chain {chain}")


def named_counter_packets(name: str) -> int:
    listing = json.loads(subprocess.run(["nft", "-j", "list", "counter", "inet", "gespann_drops", name],
                                        capture_output=True, text=True, check=True, timeout=30).stdout)
    return next(item["counter"]["packets"] for item in listing["nftables"] if "counter" in item)


@pytest.fixture
def watched(namespace):
    with ProbeSet.attach([PROBE], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        yield collector


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_netfilter_drops_equal_the_rules_counters(namespace, mode, perf_event_link, needed):
    from kernel_features import require

    require(*(feature() for feature in needed))
    if mode not in {flavour.mode for flavour in PROBE.flavours}:
        pytest.skip(f"n/a: packet_drops has no {mode} flavour (skb:kfree_skb is a tracepoint)")
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=namespace.inode)
    with ProbeSet.attach([PROBE], settings) as probes, KernelCollector(probes, namespace.path) as collector:
        assert probes["packet_drops"].flavour.mode == mode
        with namespace.enter():
            nft("add table inet gespann_drops\n"
                "add chain inet gespann_drops out { type filter hook output priority 0; }\n"
                f"add rule inet gespann_drops out udp dport {PORT} counter drop\n"
                "add chain inet gespann_drops in { type filter hook input priority 0; }\n"
                f"add rule inet gespann_drops in tcp dport {PORT} counter drop\n")
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(7):
                with pytest.raises(PermissionError):  # a local NF_DROP tells the sender
                    sender.sendto(b"dropped", ("127.0.0.1", PORT))
            sender.close()
            client = socket.socket()
            # The SYN dies at the input hook, handled in this task's softirq. Given up before its first
            # retransmission (1 s), whose timer may run on top of a task some kernels run no program
            # over (kernel_skips.py): that drop would go unseen by every BPF program.
            client.settimeout(0.5)
            with pytest.raises(OSError):
                client.connect(("127.0.0.1", PORT))
            client.close()
            udp_dropped, tcp_dropped = nft_counter_packets("out"), nft_counter_packets("in")
        assert udp_dropped == 7 and tcp_dropped >= 1
        assert dropped(collector) == {("udp", reason("NETFILTER_DROP")): udp_dropped,
                                      ("tcp", reason("NETFILTER_DROP")): tcp_dropped}


def test_no_socket_drops_equal_the_kernels_counters(namespace, watched):
    with namespace.enter():
        before = mib.counters()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            sender.sendto(b"nobody", ("127.0.0.1", PORT))
        sender.close()
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", PORT), timeout=5)
        after = mib.counters()
    no_ports = after["Udp"]["NoPorts"] - before["Udp"]["NoPorts"]
    resets = after["Tcp"]["OutRsts"] - before["Tcp"]["OutRsts"]  # one per SYN to a closed port, nothing else
    assert (no_ports, resets) == (5, 3)
    assert dropped(watched) == {("udp", reason("NO_SOCKET")): no_ports, ("tcp", reason("NO_SOCKET")): resets}


def test_a_full_receive_buffer_equals_rcvbuf_errors(namespace, watched):
    with namespace.enter():
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # the kernel doubles it, and floors it
        receiver.bind(("127.0.0.1", 0))
        before = mib.counters()["Udp"]["RcvbufErrors"]
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(200):
            sender.sendto(b"z" * 1000, receiver.getsockname())
        errors = mib.counters()["Udp"]["RcvbufErrors"] - before
        sender.close(), receiver.close()
    assert errors > 0, "the buffer never filled"
    assert dropped(watched) == {("udp", reason("SOCKET_RCVBUFF")): errors}


def test_drops_elsewhere_are_not_counted_when_scoped(namespace, watched):
    """A drop in another namespace is not the watched one's."""
    other = Namespace()
    try:
        with other.enter():
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(4):
                sender.sendto(b"elsewhere", ("127.0.0.1", PORT))
            sender.close()
            assert mib.counters()["Udp"]["NoPorts"] == 4
    finally:
        other.remove()
    assert dropped(watched) == {}


def test_packet_drops_run_by_default_and_can_be_left_out(namespace):
    kept = dataclasses.replace(Config(), netns=namespace.path)
    with ProbeSet.attach_all(kept) as probes:
        assert "packet_drops" in probes.probes
    left_out = dataclasses.replace(kept, probe_modes={"packet_drops": "off"})
    with ProbeSet.attach_all(left_out) as probes, KernelCollector(probes, namespace.path) as collector:
        assert "packet_drops" not in probes.probes
        assert "packets_dropped_total" not in collector.snapshot().metrics


@pytest.mark.parametrize("mode", ["tp_btf", "raw_tracepoint", "tracepoint"])
def test_a_connections_dropped_packets_are_in_its_record(namespace, mode):
    """Packets of an open connection dropped mid-stream (an nftables rule on output, then lifted): the
    client's record carries as many drops as the rule's counter, with the reason; the server's none."""
    from kernel_features import require
    from tcp_traffic import TcpTraffic, close_orderly

    from gespann.bpf import features
    from gespann.bpf.channel import RecordChannel
    from gespann.probes.tcp import lifecycle as tcp_lifecycle
    from gespann.probes.tcp import resets as tcp_resets

    require({"tp_btf": features.tp_btf, "raw_tracepoint": features.raw_tracepoint,
             "tracepoint": features.tracepoint}[mode]())
    channel = RecordChannel.for_reader("auto", "gsp_records")
    settings = AttachSettings(mode=mode, netns=namespace.inode)
    with channel, ProbeSet.attach([tcp_lifecycle.PROBE, *tcp_resets.PROBES, PROBE], settings,
                                  records=channel) as probes, \
            KernelCollector(probes, namespace.path, records=channel) as collector:
        assert probes["packet_drops"].flavour.mode == mode
        with namespace.enter():
            traffic = TcpTraffic()
            client, server = traffic.connect()
            # A named counter outlives the rule, so the rule can go first and be read after: no drop
            # can come between the reading and the lifting.
            nft("add table inet gespann_drops\n"
                "add counter inet gespann_drops dropped\n"
                "add chain inet gespann_drops out { type filter hook output priority 0; }\n"
                f"add rule inet gespann_drops out tcp dport {traffic.port} meta length > 200 counter name dropped "
                "drop\n")
            client.sendall(b"d" * 1000)  # the segment and its retransmissions die on the way out
            time.sleep(1.0)
            nft("flush chain inet gespann_drops out\n")
            dropped_by_rule = named_counter_packets("dropped")
            nft("delete table inet gespann_drops\n")
            received = b""
            while len(received) < 1000:  # the next retransmission goes through
                received += server.recv(4096)
            close_orderly(client, server)
            traffic.close()
        assert dropped_by_rule >= 1
        # A run the kernel skipped (the program already running on that CPU) is the kernel's own count of
        # what the probe could not see: it accounts for every drop the figures lack, and is exported.
        missed = collector.snapshot()["probe_runs_missed_total"].value(probe="packet_drops")
        events, deadline = [], time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            events.extend(collector.events(timeout=0.1))
        by_role = {event.role: event for event in events}
        assert set(by_role) == {"client", "server"}, events
        assert (by_role["client"].drops + missed, by_role["client"].drop_reason) == (
            dropped_by_rule, reason("NETFILTER_DROP")), (dropped(collector), missed)
        assert (by_role["server"].drops, by_role["server"].drop_reason) == (0, "")
        # The closing side frees its peer's unread FIN with its receive queue, which the kernel reports as a
        # drop (QUEUE_PURGE on 6.18; no reason, so unknown, before 5.17): only the rule's drops are compared.
        if reason("NETFILTER_DROP") != "unknown":
            assert dropped(collector)[("tcp", "NETFILTER_DROP")] + missed == dropped_by_rule


def test_protocols_past_the_known_and_the_overflow_are_labelled_other():
    """No kernel needed: the reader over maps as they read back, a key of an unknown protocol index and a
    count that found the map full."""
    from collections import namedtuple

    from gespann.probes.drops.packet_drops import PROTOCOLS, DropCounts
    from gespann.probes.drops.reasons import DropReasons

    key = namedtuple("key", "protocol reason")
    counts = {key(0, 3): [1, 2], key(len(PROTOCOLS) + 5, 3): [4, 0]}
    reader = DropCounts(counts, {0: [0, 7]}, DropReasons({3: "SKB_DROP_REASON_NO_SOCKET"}))
    assert reader.series() == {"packets_dropped_total": {
        labels(protocol="tcp", reason="NO_SOCKET"): 3, labels(protocol="other", reason="NO_SOCKET"): 4,
        labels(protocol="other", reason="other"): 7}}
