"""The workload: loopback TCP connections from loadgen.c, built with gcc, run in the bench's namespace.

As fast as they go by default; at a set rate when tracers are compared at one load they all keep up
with; with UDP datagrams beside each connection for a TCP+UDP workload.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("loadgen.c")


class LoadError(RuntimeError):
    """The load generator could not be built, or a run did not complete."""


@dataclass(frozen=True)
class LoadResult:
    connections: int  # completed: connect, request, response, close
    errors: int
    seconds: float
    per_second: float
    cpu_s: float  # the load generator's own CPU, kernel work on its behalf included
    threads: int
    port: int = 0  # the TCP listening port: a host-wide tracer's lines for these connections name it

    @property
    def cpu_us_per_connection(self) -> float:
        return self.cpu_s * 1e6 / self.connections


def parse(output: str) -> LoadResult:
    """The JSON line loadgen prints."""
    try:
        fields = json.loads(output.strip().splitlines()[-1])
        return LoadResult(int(fields["connections"]), int(fields["errors"]), float(fields["seconds"]),
                          float(fields["per_second"]), float(fields["cpu_s"]), int(fields["threads"]),
                          int(fields.get("port", 0)))
    except (IndexError, ValueError, KeyError, TypeError) as err:
        raise LoadError(f"unreadable loadgen output {output.strip()[-200:]!r}: {err}") from None


def build(dest: Path) -> Path:
    """Compile loadgen.c to `dest` (again only if the source is newer)."""
    if dest.exists() and dest.stat().st_mtime >= SOURCE.stat().st_mtime:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(dest), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LoadError(f"gcc could not build {SOURCE.name}:\n{done.stderr.strip()}")
    return dest


def run(binary: Path, count: int, seconds: float, threads: int, prefix: list[str] | None = None,
        rate: float = 0, udp: int = 0, size: int = 64) -> LoadResult:
    """One bounded run; `prefix` runs it elsewhere (`ip netns exec NAME`); `rate` connections per second
    (0: as fast as it goes); `udp` datagrams echoed per connection."""
    argv = [*(prefix or []), str(binary), str(count), str(seconds), str(threads), str(size), f"{rate:g}", str(udp)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode not in (0, 1):
        raise LoadError(f"loadgen exited with {done.returncode}: {done.stderr.strip()}")
    result = parse(done.stdout)
    if result.errors:
        raise LoadError(f"loadgen: {result.errors} of {result.connections + result.errors} connections failed")
    return result
