"""Counters kept in maps and bumped from BPF code: the code to emit, in one place.

A counter is a u64 value in an array or hash map (a per-CPU one keeps CPUs
off each other's cache lines; user space sums the list). The increment is
atomic, so a plain map shared by CPUs counts right too.
"""
from __future__ import annotations

from asm import DW, R0, R1, R2, R10, Program, Slot


def emit_increment(p: Program, counters: str, key: Slot) -> None:
    """Emit `counters[key] += 1` for the key in stack slot `key`; no-op if the key is absent.

    Clobbers R0-R5.
    """
    absent = p.new_label(f"{counters}.absent")
    p.ld_map(R1, counters)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")
    p.jeq(R0, 0, absent)
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.label(absent)
