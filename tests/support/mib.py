"""The kernel's own MIB counters of a network namespace: the oracle for figures the network decides.

Whether a segment is retransmitted is up to the network and the machine's load
(a slow guest retransmits on loopback), so a test never assumes a constant for
it: it reads what the kernel counted in the test's own namespace, from
/proc/net/snmp and /proc/net/netstat as seen from inside it.
"""
from __future__ import annotations

from pathlib import Path

#: The calling thread's view: setns() into a namespace changes the thread's, not the process's.
PROC_NET = Path("/proc/thread-self/net")


def _read(name: str, net: Path = PROC_NET) -> dict[str, dict[str, int]]:
    """{"Tcp": {"ActiveOpens": 3, ...}, ...}: the files pair a header line with a value line."""
    lines = (net / name).read_text().splitlines()
    counters: dict[str, dict[str, int]] = {}
    for header, values in zip(lines[::2], lines[1::2]):
        group, _, names = header.partition(":")
        _, _, numbers = values.partition(":")
        counters[group] = dict(zip(names.split(), (int(n) for n in numbers.split())))
    return counters


def counters(net: Path = PROC_NET) -> dict[str, dict[str, int]]:
    """Every counter of /proc/net/snmp and /proc/net/netstat, for the namespace this thread is in
    (or, with `net` = /proc/PID/net, the one process PID is in)."""
    return {**_read("snmp", net), **_read("netstat", net)}


def tcp(name: str) -> int:
    """One Tcp counter of this thread's namespace, e.g. tcp("RetransSegs")."""
    return counters()["Tcp"][name]
