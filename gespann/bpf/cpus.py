"""CPU sets as the kernel lists them in /sys/devices/system/cpu.

Per-CPU maps hold one value per *possible* CPU; perf buffers open one event
per *online* CPU.
"""
from __future__ import annotations

import functools

from .errors import BPFError

_CPU_DIR = "/sys/devices/system/cpu"


def parse_cpu_list(text: str) -> list[int]:
    """`0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def _read_cpu_list(name: str) -> list[int]:
    try:
        with open(f"{_CPU_DIR}/{name}") as f:
            return parse_cpu_list(f.read())
    except (OSError, ValueError) as e:
        raise BPFError(f"cannot read the {name} CPUs from {_CPU_DIR}/{name}: {e}") from None


@functools.cache
def possible_cpus() -> int:
    """How many values a per-CPU map holds per key: num_possible_cpus() in the kernel."""
    return len(_read_cpu_list("possible"))


def online_cpus() -> list[int]:
    """The CPUs running now (not cached: CPUs can come and go)."""
    return _read_cpu_list("online")
