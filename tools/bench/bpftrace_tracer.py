"""bpftrace as the bench runs it: connections.bt, ready when its BEGIN probe prints "ready".

bpftrace runs BEGIN once every probe is attached, so "ready" is the moment it
is tracing (the "Attaching N probes..." line comes before the attachment and
is recorded alongside). Its counters are printed when it exits on SIGINT.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .counts import Counts
from .process import Launched, Startup

SCRIPT = Path(__file__).with_name("connections.bt")
STARTUP_TIMEOUT_S = 120
_MAP_LINE = re.compile(r"^@(?P<name>\w+)(?:\[(?P<key>[^\]]*)\])?: (?P<value>-?\d+)$")
_ATTACHING = re.compile(r"^Attaching (\d+) probes?")


def parse_maps(output: str) -> dict[tuple[str, str], int]:
    """(map, key) -> value for each scalar line bpftrace prints at exit (`@opened[1]: 30000`)."""
    maps = {}
    for line in output.splitlines():
        match = _MAP_LINE.match(line.strip())
        if match:
            maps[(match["name"], match["key"] or "")] = int(match["value"])
    return maps


def counts_from_output(output: str) -> Counts:
    maps = parse_maps(output)

    def total(name: str) -> int:
        return sum(v for (n, _), v in maps.items() if n == name)

    return Counts(maps.get(("opened", "1"), 0), maps.get(("opened", "2"), 0), maps.get(("closed", "1"), 0),
                  maps.get(("closed", "2"), 0), total("resets"), total("failed"))


def attaching_probes(output: str) -> int | None:
    for line in output.splitlines():
        match = _ATTACHING.match(line.strip())
        if match:
            return int(match[1])
    return None


def version() -> str | None:
    import subprocess

    path = shutil.which("bpftrace")
    if path is None:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


class Bpftrace:
    def __init__(self, netns_inode: int):
        self.netns_inode = netns_inode

    def start(self) -> tuple[Launched, Startup, float | None]:
        """The process, its start-up to "ready", and the time its "Attaching" line came."""
        launched = Launched(["bpftrace", "-B", "line", str(SCRIPT), str(self.netns_inode)])
        try:
            startup = launched.wait_line(lambda line: line.strip() == "ready", STARTUP_TIMEOUT_S)
        except BaseException:
            launched.stop()
            raise
        attaching = next((t for t, line in launched.lines if _ATTACHING.match(line.strip())), None)
        return launched, startup, attaching

    @staticmethod
    def stop_and_count(launched: Launched) -> Counts:
        launched.stop()
        return counts_from_output(launched.output())
