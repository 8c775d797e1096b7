#!/usr/bin/env python3
"""Run a command with another `gespann run` on the host: how `make test` proves the suite shares its machine.

Whoever runs gespann as a service runs the suite beside it: the same program and map names loaded, the same
tracepoints attached, the host's connections counted twice. This starts the installed gespann as a service
runs it by default (Prometheus only, here on 127.0.0.1:PORT, below the ephemeral ports the tests' servers
take), runs the command, then checks the neighbour still serves a page with figures on it, and stops it by
its PID. With --records it writes connection records to a jsonl file too (its record channel loaded, a
record sent for every connection the suite makes: more CPU, and timing-sensitive tests feel it).

Exits with the command's status; 1 when the neighbour could not start, died, or served an empty page.

    tools/beside_gespann.py [--gespann .venv/bin/gespann] [--port 9469] [--records] -- COMMAND [ARG...]
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120


def say(message: str) -> None:
    print(f"beside_gespann: {message}", file=sys.stderr, flush=True)


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as page:
            return page.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def samples(page: str) -> list[str]:
    return [line for line in page.splitlines() if line.startswith("gespann_")]


class Neighbour:
    """`gespann run` in a directory of its own; its log is shown when it fails."""

    def __init__(self, gespann: Path, port: int, workdir: Path, records: bool = False):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.log = workdir / "gespann.log"
        config = workdir / "gespann.yaml"
        config.write_text("exporters:\n"
                          f"  - {{type: prometheus, settings: {{address: 127.0.0.1, port: {port}}}}}\n"
                          + (f"  - {{type: jsonl, settings: {{path: {workdir / 'records.jsonl'}}}}}\n" if records
                             else ""))
        with self.log.open("w") as log:
            self.process = subprocess.Popen([str(gespann), "run", "--config", str(config)], stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL)

    def wait_serving(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if scrape(self.url):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gespann", type=Path, default=REPO / ".venv" / "bin" / "gespann",
                        help="the installed gespann to run beside the command (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9469, help="its metrics port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--records", action="store_true", help="the neighbour writes connection records too")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with tempfile.TemporaryDirectory(prefix="gespann-beside-") as workdir:
        neighbour = Neighbour(args.gespann, args.port, Path(workdir), args.records)
        try:
            if not neighbour.wait_serving():
                say(f"the neighbouring gespann did not serve {neighbour.url}:\n{neighbour.tail()}")
                return 1
            say(f"a gespann (pid {neighbour.process.pid}) serves {neighbour.url} while this runs: {' '.join(command)}")
            status = subprocess.call(command)
            page = scrape(neighbour.url) if neighbour.process.poll() is None else None
        finally:
            stopped = neighbour.stop()
        if page is None or not samples(page):
            say(f"the neighbouring gespann {'died' if page is None else 'served an empty page'} during the "
                f"command (exit {stopped}):\n{neighbour.tail()}")
            return status or 1
        say(f"the neighbouring gespann served {len(samples(page))} samples to the end and stopped with {stopped}")
        return status or (1 if stopped != 0 else 0)


if __name__ == "__main__":
    sys.exit(main())
