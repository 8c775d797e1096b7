"""Map helper calls from a probe program, with keys and values in stack slots.

Every probe looks up and updates maps the same way: the map's fd into R1, the
stack addresses of key (and value) into R2 (and R3), the flags into R4.
"""

from __future__ import annotations

from asm import DW, R0, R1, R2, R3, R4, R10, Program, Slot


def emit_map_lookup(p: Program, map_name: str, key: Slot) -> None:
    """R0 = map_name[the key in stack slot `key`], or 0 when there is none. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")


def emit_map_update(p: Program, map_name: str, key: Slot, value: Slot, flags: int) -> None:
    """map_name[the key in slot `key`] = the value in slot `value`; R0 = 0 or -errno in its low 32 bits, so
    test it with the 32-bit jumps (jeq32, jne32): before 6.5 the verifier calls the map's update directly,
    which returns an int, and the upper half of R0 is then undefined. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.mov(R3, R10)
    p.add(R3, value.at())
    p.mov(R4, flags)
    p.call("map_update_elem")


def emit_map_delete(p: Program, map_name: str, key: Slot) -> None:
    """Delete map_name[the key in stack slot `key`]; R0 = 0 or -errno in its low 32 bits (see
    emit_map_update). Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_delete_elem")


def emit_increment(p: Program, counters: str, key: Slot) -> None:
    """Emit `counters[key] += 1` for the key in stack slot `key` (a u64 counter in an array or hash map;
    atomic, so CPUs may share it); no-op if the key is absent.

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
