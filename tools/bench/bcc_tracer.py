"""bcc's tcplife and tcpstates (Debian bpfcc-tools) as the bench runs them.

They compile their C at start-up against the running kernel's headers, found
at /lib/modules/$(uname -r)/build or $BCC_KERNEL_SOURCE. Where there are none,
they exit with "Failed to compile BPF module": the bench records that after
trying, as "cannot run: no kernel headers". Where they run, each prints a
header line once its probes are attached, then one line per event (tcplife: a
connection's end, per side; tcpstates: every state change); their output goes
to a file, so that reading it costs the bench nothing while it measures.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .process import Launched, NotReady, Startup

STARTUP_TIMEOUT_S = 600  # compiling with clang under software emulation takes minutes


@dataclass(frozen=True)
class Tool:
    name: str  # as in the tables: "bcc tcplife"
    program: str  # the Debian executable
    header: str  # the first word of the header line it prints once attached
    lines_per_connection: int  # output lines for one loopback connection (both sides), nothing lost


TOOLS = (
    Tool("bcc tcplife", "tcplife-bpfcc", "PID", 2),
    Tool("bcc tcpstates", "tcpstates-bpfcc", "SKADDR", 10),
)
NO_HEADERS = "cannot run: no kernel headers"


def why_not(output: str) -> str:
    """The one-line result for a bcc tool that exited before it was ready."""
    if "Unable to find kernel headers" in output or "Failed to compile BPF module" in output:
        return NO_HEADERS
    last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
    return f"cannot run: {last.strip()}"


def lost_samples(output: str) -> int:
    """What bcc said its perf buffer dropped ("Possibly lost N samples"), added up."""
    return sum(int(n) for n in re.findall(r"Possibly lost (\d+) samples?", output))


def header_seen(path: Path, header: str) -> bool:
    try:
        with open(path) as f:
            return any(line.split()[:1] == [header] for line in f.read(8192).splitlines())
    except OSError:
        return False


def event_lines(path: Path, header: str) -> int:
    """Output lines after the header: the events the tool printed."""
    with open(path) as f:
        return sum(1 for line in f if line.strip() and line.split()[:1] != [header])


def locate(program: str) -> str | None:
    return shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")


class Bcc:
    def __init__(self, tool: Tool, workdir: Path, kernel_source: str | None = None):
        self.tool = tool
        self.output = workdir / f"{tool.program}.out"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if kernel_source:
            self.env["BCC_KERNEL_SOURCE"] = kernel_source

    def start(self) -> tuple[Launched, Startup]:
        """Started and ready; NotReady carries the one-line reason (`why_not`) when it cannot run."""
        path = locate(self.tool.program)
        if path is None:
            raise NotReady(f"cannot run: {self.tool.program} is not installed (Debian bpfcc-tools)")
        launched = Launched([path], env=self.env, stdout_path=str(self.output))
        try:
            startup = launched.wait_ready(lambda: header_seen(self.output, self.tool.header), STARTUP_TIMEOUT_S)
        except NotReady:
            launched.stop()
            raise NotReady(why_not(launched.output() + "\n" + _read(self.output))) from None
        except BaseException:
            launched.stop()
            raise
        return launched, startup

    def events(self) -> int:
        return event_lines(self.output, self.tool.header)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
