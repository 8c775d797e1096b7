"""The drop section: the namespace's counters, gespann's drop counts, and the figures, verdict and table."""
import pytest
from bench import drops, report

SNMP = """Ip: Forwarding DefaultTTL InReceives OutRequests
Ip: 1 64 120 100
Icmp: InMsgs OutMsgs OutDestUnreachs
Icmp: 50 50 50
Udp: InDatagrams NoPorts InErrors
Udp: 0 50 0
"""

METRICS = """# TYPE gespann_packets_dropped_total counter
gespann_packets_dropped_total{protocol="udp",reason="NO_SOCKET"} 50.0
gespann_packets_dropped_total{protocol="tcp",reason="QUEUE_PURGE"} 3.0
gespann_packets_dropped_total{protocol="tcp",reason="NO_SOCKET"} 1.0
# TYPE gespann_connections_opened_total counter
gespann_connections_opened_total{protocol="tcp",role="client"} 7.0
"""


def test_snmp_counters_are_read_by_section_and_name():
    assert drops.parse_snmp(SNMP) == {"ip_out": 100, "udp_noports": 50, "udp_in": 0, "icmp_unreachable_out": 50}
    assert drops.parse_snmp("Ip: OutRequests\nIp: 9\n")["udp_noports"] == 0  # absent: 0


def test_gespanns_drops_are_read_by_protocol_and_reason():
    assert drops.drops_counted(METRICS) == {"udp NO_SOCKET": 50, "tcp QUEUE_PURGE": 3, "tcp NO_SOCKET": 1}
    assert drops.drops_counted("") == {}


def tp(runs, ns):
    return {"runs": runs, "run_time_ns": runs * ns}


def phase(units, packets, drop, send, receive, noports=0, unreachable=0, dropped=None):
    return {"units": units, "snmp": {"ip_out": packets, "udp_noports": noports, "icmp_unreachable_out": unreachable},
            "dropped": dropped or {},
            "per_tracepoint": {"kfree_skb": tp(*drop), "net_dev_queue": tp(*send), "netif_receive_skb": tp(*receive),
                               "inet_sock_set_state": tp(10, 300)}}


def round_(drop_ns, send_ns, receive_ns):
    return {drops.TCP: phase(1000, 10_000, (1000, 130), (10_000, 60), (10_000, 100),
                             dropped={"tcp QUEUE_PURGE": 1000}),
            drops.UDP: phase(5000, 5000, (0, 0), (5000, 300), (5000, 220)),
            drops.CLOSED: phase(5000, 10_000, (5000, drop_ns), (10_000, send_ns), (10_000, receive_ns),
                                noports=5000, unreachable=5000, dropped={"udp NO_SOCKET": 5000})}


DROPS = {"datagrams": 5000, "rounds": [round_(130, 180, 160), round_(140, 170, 150), round_(150, 200, 175)],
         "measured": {"date": "2026-12-04", "kernel": "6.18.44", "cpus": 2, "commit": "abc1234"}}


def test_figures_are_medians_over_rounds_and_ratios_are_taken_round_by_round():
    figures = drops.summary(DROPS)
    assert figures["cost"]["packet_drops"].median == pytest.approx(140)
    assert figures["cost"]["udp_send"].median == pytest.approx(180)
    assert figures["cost"]["udp_receive"].median == pytest.approx(160)
    assert figures["ratios"]["udp_send"].median == pytest.approx(150 / 200)  # of 130/180, 140/170, 150/200
    assert figures["by_phase"][drops.UDP]["udp_send"].median == pytest.approx(300)
    assert figures["by_phase"][drops.UDP]["packet_drops"] is None  # it never ran there
    tcp = figures["frees"][drops.TCP]
    assert tcp["per_packet"].median == pytest.approx(0.1) and tcp["per_unit"].median == pytest.approx(1.0)
    assert tcp["ns_per_packet"].median == pytest.approx(13)
    assert tcp["reasons"] == ["tcp QUEUE_PURGE"]
    assert figures["frees"][drops.UDP]["per_packet"].median == 0
    assert figures["met"] is True


def test_the_verdict_needs_a_drop_cheaper_than_either_udp_probe_per_packet():
    cost = drops.summary(DROPS)["cost"]
    assert drops.verdict(cost) is True
    assert drops.verdict({**cost, "udp_receive": cost["packet_drops"]}) is False  # equal is not below
    assert drops.verdict({**cost, "packet_drops": None}) is None
    dearer = {**DROPS, "rounds": [round_(170, 180, 160)]}
    assert drops.summary(dearer)["met"] is False
    judged = {target: met for target, met in report.verdicts({"drops": dearer}).items() if target.startswith("drops")}
    assert judged == {"drops: on by default: cost per drop below the UDP probes' per packet: MISSED (packet_drops "
                      "170 ns per drop; udp_send 180 ns, udp_receive 160 ns per packet; 0.94x and 1.06x)": False}


def test_the_section_tables_costs_frees_and_the_off_key():
    text = report.markdown({"drops": DROPS})
    assert "### Dropped packets: packet_drops (skb:kfree_skb) beside the UDP probes" in text
    assert "commit abc1234" in text and "medians of 3 rounds" in text
    assert "| packet_drops (kfree_skb) | 140 (130–150) | 5000 |  | — | 130 |" in text
    assert "| udp_send (net_dev_queue) | 180 (170–200) | 10000 | 0.75x | 300 | 60 |" in text
    assert "the kernel counted 5000 (Udp NoPorts), gespann 5000 drops; 5000 ICMP port unreachable" in text
    assert "| tcp | 1000 connections | 10000 | 1000 | 0.100 | 1.000 | 13.0 | 1000 (tcp QUEUE_PURGE) |" in text
    assert "| udp | 5000 datagrams | 5000 | 0 | 0.000 | 0.000 | 0.0 | 0 |" in text
    assert ("- on by default: cost per drop below the UDP probes' per packet: met (packet_drops 140 ns per drop; "
            "udp_send 180 ns, udp_receive 160 ns per packet; 0.75x and 0.86x); "
            "off with `attach: {probes: {packet_drops: off}}`") in text


def test_without_the_closed_port_run_nothing_is_judged():
    partial = {"rounds": [{drops.TCP: round_(1, 1, 1)[drops.TCP]}]}
    assert drops.summary(partial)["met"] is None
    assert "not judged" in "\n".join(drops.markdown(partial))


def test_the_drop_section_runs_alone_but_not_with_another_part_alone():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_script", Path(__file__).parents[2] / "tools" / "bench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.parse_args(["--drops-only", "--cost-rounds", "1"]).drops_only is True
    with pytest.raises(SystemExit):
        script.parse_args(["--drops-only", "--scale-only"])
