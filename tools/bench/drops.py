"""The drop probe's cost: packet_drops (skb:kfree_skb) per drop, beside udp_send and udp_receive per packet.

gespann's packet_drops runs on every kfree_skb; the issue puts it on by default only if its
in-kernel cost per drop is below the UDP probes' per packet. So each round starts `gespann run`
(every default probe, scoped to the bench's namespace) with BPF run statistics on, and runs three
workloads under it, reading every program's run_cnt and run_time_ns before and after each:

- tcp: the bench's loopback TCP connections (loadgen), traffic with no drops meant;
- udp: datagrams to a socket that reads each one, again no drops meant;
- udp to a closed port: datagrams to a port with no socket, each one dropped (NO_SOCKET), counted
  by the kernel (the namespace's Udp NoPorts) and by gespann (gespann_packets_dropped_total).

The closed-port run gives the three probes' ns per event over the same packets: the verdict
compares packet_drops' ns per drop with udp_send's and udp_receive's ns per packet. The other two
give how often kfree_skb reached the program per packet of ordinary traffic: frees that are not
drops leave through consume_skb on recent kernels and never run it; older ones may differ. Run
counts are the whole host's (a program runs wherever its tracepoint fires, before gespann's
namespace check); packets are the namespace's own (its IP OutRequests).
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from . import bpfstats
from .gespann_tracer import GespannMetrics
from .namespace import Namespace
from .summary import Spread, paired_ratios, spread

DROPS, SEND, RECEIVE = "kfree_skb", "net_dev_queue", "netif_receive_skb"
#: Probe name -> the tracepoint it runs on, as the report names them.
PROBES = {"packet_drops": DROPS, "udp_send": SEND, "udp_receive": RECEIVE}
TCP, UDP, CLOSED = "tcp", "udp", "udp to a closed port"
DATAGRAMS = 50_000
VERDICT = "on by default: cost per drop below the UDP probes' per packet"
OFF_KEY = "attach: {probes: {packet_drops: off}}"

#: argv[1] datagrams of 20 bytes on loopback: to a socket that reads each one ("delivered"), or to a port
#: whose socket was closed first, so none is listening ("closed").
SENDER = """
import socket, sys
mode, count = sys.argv[1], int(sys.argv[2])
sender, receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.bind(("127.0.0.1", 0))
receiver.bind(("127.0.0.1", 0))
destination = receiver.getsockname()
if mode == "closed":
    receiver.close()
for _ in range(count):
    sender.sendto(b"d" * 20, destination)
    if mode == "delivered":
        receiver.recv(64)
"""

#: The namespace's counters read around each workload: /proc/net/snmp (section, field).
SNMP = {"ip_out": ("Ip", "OutRequests"), "udp_noports": ("Udp", "NoPorts"),
        "udp_in": ("Udp", "InDatagrams"), "icmp_unreachable_out": ("Icmp", "OutDestUnreachs")}


def parse_snmp(text: str) -> dict[str, int]:
    """The SNMP counters the bench reads, from /proc/net/snmp's pairs of header and value lines."""
    lines = text.splitlines()
    table: dict[tuple[str, str], int] = {}
    for header, values in zip(lines[::2], lines[1::2]):
        section, names = header.split(":", 1)
        for name, value in zip(names.split(), values.split(":", 1)[1].split()):
            table[(section, name)] = int(value)
    return {key: table.get(where, 0) for key, where in SNMP.items()}


def drops_counted(metrics: str) -> dict[str, int]:
    """gespann's dropped packets by "protocol reason", from a /metrics page."""
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "gespann_packets_dropped_total":
                key = f"{sample.labels.get('protocol', '?')} {sample.labels.get('reason', '?')}"
                out[key] = out.get(key, 0) + int(sample.value)
    return out


def _snmp(ns: Namespace) -> dict[str, int]:
    done = subprocess.run([*ns.exec_prefix, "cat", "/proc/net/snmp"], capture_output=True, text=True, check=True)
    return parse_snmp(done.stdout)


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after.get(key, 0) - before.get(key, 0) for key in sorted({*after, *before})}


def _phase(ns: Namespace, gespann: GespannMetrics, pid: int, workload: Callable[[], int]) -> dict:
    """One workload under gespann: its units (connections or datagrams), the namespace's counters and
    gespann's drop counts over it, and every program's runs per tracepoint."""
    snmp, counted, runs = _snmp(ns), drops_counted(gespann.scrape() or ""), bpfstats.snapshot(pid)
    units = workload()
    after_runs = bpfstats.snapshot(pid)
    costs = bpfstats.costs(runs, after_runs)
    return {"units": units, "snmp": _minus(_snmp(ns), snmp),
            "dropped": _minus(drops_counted(gespann.scrape() or ""), counted),
            "per_tracepoint": {tp: {"runs": c.runs, "run_time_ns": c.run_time_ns} for tp, c in costs.items()}}


def _datagrams(ns: Namespace, mode: str, count: int) -> Callable[[], int]:
    def send() -> int:
        subprocess.run([*ns.exec_prefix, sys.executable, "-c", SENDER, mode, str(count)], check=True)
        return count
    return send


def run(gespann: GespannMetrics, ns: Namespace, tcp: Callable[[], int], rounds: int, say: Callable[[str], None],
        datagrams: int = DATAGRAMS) -> dict:
    """`rounds` rounds of the three workloads under one `gespann run` each; the caller holds BPF run
    statistics on. `tcp` runs the TCP workload and returns its connections."""
    measured = []
    for index in range(rounds):
        launched, _ = gespann.start()
        try:
            measured.append({TCP: _phase(ns, gespann, launched.pid, tcp),
                             UDP: _phase(ns, gespann, launched.pid, _datagrams(ns, "delivered", datagrams)),
                             CLOSED: _phase(ns, gespann, launched.pid, _datagrams(ns, "closed", datagrams))})
        finally:
            launched.stop()
        cost = ns_per_event(measured[-1][CLOSED])
        say(f"drops round {index + 1}/{rounds}: " + ", ".join(
            f"{probe} {cost[probe]:.0f} ns" if cost[probe] is not None else f"{probe} not run" for probe in PROBES))
    return {"rounds": measured, "datagrams": datagrams}


def ns_per_event(phase: dict) -> dict[str, float | None]:
    """Probe -> its ns per run over one phase (None: it did not run)."""
    out = {}
    for probe, tracepoint in PROBES.items():
        cost = phase["per_tracepoint"].get(tracepoint)
        out[probe] = cost["run_time_ns"] / cost["runs"] if cost and cost["runs"] else None
    return out


def _runs(phase: dict, tracepoint: str) -> int:
    return phase["per_tracepoint"].get(tracepoint, {}).get("runs", 0)


def summary(drops: dict) -> dict:
    """The figures the report quotes, medians over the rounds: each probe's ns per event in the closed-port
    run, packet_drops' against each UDP probe's (round by round), and for each workload kfree_skb's runs per
    packet and per unit (connection or datagram)."""
    rounds = drops.get("rounds", [])
    closed = [ns_per_event(r[CLOSED]) for r in rounds if CLOSED in r]
    cost = {probe: spread([c[probe] for c in closed]) for probe in PROBES}
    by_phase = {phase: {probe: spread([ns_per_event(r[phase])[probe] for r in rounds if phase in r])
                        for probe in PROBES} for phase in (TCP, UDP, CLOSED)}
    ratios = {probe: spread(paired_ratios([c["packet_drops"] for c in closed], [c[probe] for c in closed]))
              for probe in ("udp_send", "udp_receive")}
    frees = {}
    for phase in (TCP, UDP, CLOSED):
        measured = [r[phase] for r in rounds if phase in r]
        frees[phase] = {
            "per_packet": spread([_runs(m, DROPS) / m["snmp"]["ip_out"] for m in measured if m["snmp"].get("ip_out")]),
            "per_unit": spread([_runs(m, DROPS) / m["units"] for m in measured if m["units"]]),
            "runs": spread([_runs(m, DROPS) for m in measured]),
            "ns_per_packet": spread([m["per_tracepoint"].get(DROPS, {}).get("run_time_ns", 0) / m["snmp"]["ip_out"]
                                     for m in measured if m["snmp"].get("ip_out")]),
            "packets": spread([m["snmp"].get("ip_out", 0) for m in measured]),
            "units": spread([m["units"] for m in measured]),
            "noports": spread([m["snmp"].get("udp_noports", 0) for m in measured]),
            "unreachable": spread([m["snmp"].get("icmp_unreachable_out", 0) for m in measured]),
            "counted": spread([sum(m["dropped"].values()) for m in measured]),
            "reasons": sorted({key for m in measured for key, count in m["dropped"].items() if count}),
            "send_runs": spread([_runs(m, SEND) for m in measured]),
            "receive_runs": spread([_runs(m, RECEIVE) for m in measured]),
        }
    return {"cost": cost, "by_phase": by_phase, "ratios": ratios, "frees": frees, "met": verdict(cost)}


def verdict(cost: dict[str, Spread | None]) -> bool | None:
    """Whether packet_drops' median ns per drop is below both UDP probes' ns per packet (None: not measured)."""
    drop, send, receive = cost.get("packet_drops"), cost.get("udp_send"), cost.get("udp_receive")
    if not (drop and send and receive):
        return None
    return drop.median < min(send.median, receive.median)


def _ns(value: Spread | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if value.n > 1 and value.low != value.high:
        return f"{value.median:.{digits}f} ({value.low:.{digits}f}–{value.high:.{digits}f})"
    return f"{value.median:.{digits}f}"


def verdict_line(figures: dict) -> str:
    cost, ratios, met = figures["cost"], figures["ratios"], figures["met"]
    if met is None:
        return f"{VERDICT}: not judged (a probe did not run in the closed-port workload)"
    return (f"{VERDICT}: {'met' if met else 'MISSED'} (packet_drops {cost['packet_drops'].median:.0f} ns per drop; "
            f"udp_send {cost['udp_send'].median:.0f} ns, udp_receive {cost['udp_receive'].median:.0f} ns per "
            f"packet; {ratios['udp_send'].median:.2f}x and {ratios['udp_receive'].median:.2f}x)")


def markdown(drops: dict) -> list[str]:
    """The drop section: the three probes' cost per event in each workload, the ratios over the dropped
    datagrams, how often kfree_skb ran per packet of each workload, and the verdict."""
    figures = summary(drops)
    measured = drops.get("measured", {})
    closed = figures["frees"][CLOSED]
    lines = ["", "### Dropped packets: packet_drops (skb:kfree_skb) beside the UDP probes", "",
             f"Measured {measured.get('date', '?')} on kernel {measured.get('kernel', '?')}, "
             f"{measured.get('cpus', '?')} CPUs, commit {measured.get('commit', '?')}, load average "
             f"{measured.get('load_before', '?')}; medians of {len(drops.get('rounds', []))} rounds (min–max in "
             "brackets), each one `gespann run` (default probes, BPF run statistics on) under three workloads in "
             f"the bench's namespace: its TCP connections, {drops.get('datagrams', '?')} UDP datagrams to a socket "
             "that reads them, and as many to a port with no socket, each dropped (NO_SOCKET). Runs are the whole "
             "host's (a program runs wherever its tracepoint fires); packets are the namespace's own "
             "(IP OutRequests).", "",
             "| probe (tracepoint): ns per event | datagrams to a closed port | runs | packet_drops / this "
             "(round by round) | datagrams delivered | TCP connections |",
             "|---|---|---|---|---|---|"]
    runs = {"packet_drops": closed["runs"], "udp_send": closed["send_runs"], "udp_receive": closed["receive_runs"]}
    for probe, tracepoint in PROBES.items():
        ratio = figures["ratios"].get(probe)
        lines.append(f"| {probe} ({tracepoint}) | {_ns(figures['cost'][probe])} | {_ns(runs[probe])} | "
                     f"{f'{ratio.median:.2f}x' if ratio else ''} | {_ns(figures['by_phase'][UDP][probe])} | "
                     f"{_ns(figures['by_phase'][TCP][probe])} |")
    lines += ["", f"Per round {_ns(closed['units'])} datagrams to the closed port: the kernel counted "
              f"{_ns(closed['noports'])} (Udp NoPorts), gespann {_ns(closed['counted'])} drops; "
              f"{_ns(closed['unreachable'])} ICMP port unreachable were sent back, and the UDP probes' runs there "
              "count those packets too. Per packet sent, packet_drops costs its run time over every IP packet of "
              "the workload.", "",
              "| workload | per round | IP packets sent | kfree_skb runs | runs per packet | runs per unit | "
              "packet_drops ns per packet sent | drops gespann counted (namespace) |",
              "|---|---|---|---|---|---|---|---|"]
    for phase, unit in ((TCP, "connections"), (UDP, "datagrams"), (CLOSED, "datagrams")):
        frees = figures["frees"][phase]
        reasons = f" ({', '.join(frees['reasons'])})" if frees["reasons"] else ""
        lines.append(f"| {phase} | {_ns(frees['units'])} {unit} | {_ns(frees['packets'])} | {_ns(frees['runs'])} | "
                     f"{_ns(frees['per_packet'], 3)} | {_ns(frees['per_unit'], 3)} | "
                     f"{_ns(frees['ns_per_packet'], 1)} | {_ns(frees['counted'])}{reasons} |")
    lines += ["", f"- {verdict_line(figures)}; off with `{OFF_KEY}`"]
    return lines


def verdicts(drops: dict) -> dict[str, bool | None]:
    figures = summary(drops)
    return {verdict_line(figures): figures["met"]}
