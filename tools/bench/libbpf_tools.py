"""libbpf-tools' tcplife and tcpstates (Debian libbpf-tools) as the bench runs them.

They are CO-RE C built by clang and loaded by libbpf: no compiler and no headers at start-up, so
they run on this host (BTF at /sys/kernel/btf/vmlinux). Each attaches one program to
sock:inet_sock_set_state and sends events to user space through a perf event array; it prints one
line per event (tcplife: a socket's end, per side; tcpstates: every state change) and, on stderr,
"lost N events on CPU #C" for what its perf buffer dropped.

Their output goes to a file, so that reading it costs the bench nothing while it measures; written
to a file, C's stdout is fully buffered, so the header line comes late: a tool counts as ready once
the kernel shows its program attached (`bpftool perf show`, by pid). They trace the whole host,
not the bench's namespace; the lines of the bench's connections are the ones that name the load
generator's port between two loopback addresses (`lines_for_port`).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import bpfstats
from .process import Launched, NotReady, Startup

STARTUP_TIMEOUT_S = 60
_LOST = re.compile(r"\blost (\d+) events?\b")
_CALL = re.compile(r"\bcall ([A-Za-z_][A-Za-z0-9_]*)#")
_ADDRESS = re.compile(r"^[0-9a-fA-F:.]*[.:][0-9a-fA-F:.]*$")
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@dataclass(frozen=True)
class Tool:
    name: str  # as in the tables: "tcplife"
    program: str  # the Debian executable
    header: str  # the first word of the header line it prints
    lines_per_connection: int  # output lines for one loopback connection (both sides), nothing lost


TCPLIFE = Tool("tcplife", "tcplife", "PID", 2)
TCPSTATES = Tool("tcpstates", "tcpstates", "SKADDR", 10)
TOOLS = (TCPLIFE, TCPSTATES)
PACKAGE = "libbpf-tools"


def lost_events(stderr: str) -> int:
    """What the tool said its perf buffer dropped ("lost 12 events on CPU #0"), added up."""
    return sum(int(n) for n in _LOST.findall(stderr))


def endpoints(line: str) -> list[tuple[str, str]]:
    """The (address, port) pairs of an output line, in order: an address followed by a number."""
    words = line.split()
    return [(words[i], words[i + 1]) for i in range(len(words) - 1)
            if _ADDRESS.match(words[i]) and words[i + 1].isdigit()]


def names_port(line: str, port: int) -> bool:
    """True for a line about a connection between two loopback addresses, one end on `port`:
    a socket of the bench's load generator (its listening socket, bound to no peer, is not one)."""
    pairs = endpoints(line)
    return (len(pairs) == 2 and all(address in LOOPBACK for address, _ in pairs)
            and str(port) in (p for _, p in pairs))


@dataclass(frozen=True)
class Lines:
    events: int  # every event line, whoever's connection it was
    ours: int  # the lines of the load generator's connections


def count_lines(path: Path, header: str, port: int) -> Lines:
    events = ours = 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip() or line.split()[:1] == [header]:
                continue
            events += 1
            ours += names_port(line, port)
    return Lines(events, ours)


def helper_calls(xlated: str) -> dict[str, int]:
    """How often each helper or kernel function is called in a program's code (`bpftool prog dump
    xlated`), as written: a call in a branch counts once, however often it runs."""
    return dict(Counter(_CALL.findall(xlated)).most_common())


def program_profile(pid: int) -> dict:
    """What the kernel holds of `pid`'s programs: type, size, helper calls, the types of the maps they
    use; the explanation of their cost starts here."""
    attached = bpfstats.attachments(bpfstats.bpftool_json("perf", "show"), pid)
    programs = {p["id"]: p for p in bpfstats.bpftool_json("prog", "show") if p.get("id") in attached}
    maps = {m["id"]: m for m in bpfstats.bpftool_json("map", "show")}
    profile = {}
    for prog_id, prog in programs.items():
        xlated = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)], capture_output=True,
                                text=True, check=False).stdout
        profile[attached[prog_id]] = {
            "type": prog.get("type"), "xlated_bytes": prog.get("bytes_xlated"), "helper_calls": helper_calls(xlated),
            "maps": [f"{maps[m].get('name', '?')}: {maps[m].get('type', '?')}" for m in prog.get("map_ids", [])
                     if m in maps]}
    return profile


def locate(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


class LibbpfTool:
    def __init__(self, tool: Tool, workdir: Path):
        self.tool = tool
        self.output = workdir / f"libbpf-{tool.program}.out"

    def start(self) -> tuple[Launched, Startup]:
        """Started, and ready once its program is attached; NotReady when it cannot run."""
        path = locate(self.tool.program)
        if path is None:
            raise NotReady(f"cannot run: {self.tool.program} is not installed (Debian {PACKAGE})")
        launched = Launched([path], stdout_path=str(self.output))
        try:
            startup = launched.wait_ready(
                lambda: bool(bpfstats.attachments(bpfstats.bpftool_json("perf", "show"), launched.pid)),
                STARTUP_TIMEOUT_S, interval_s=0.02)
        except BaseException:
            launched.stop()
            raise
        return launched, startup

    def lines(self, port: int) -> Lines:
        """Read after the tool stopped: its buffered stdout is flushed when it exits on SIGINT."""
        return count_lines(self.output, self.tool.header, port)
