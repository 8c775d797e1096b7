"""Map helper calls from a probe program, with keys and values in stack slots.

Every probe looks up and updates maps the same way: the map's fd into R1, the
stack addresses of key (and value) into R2 (and R3), the flags into R4.
"""

from __future__ import annotations

from asm import R1, R2, R3, R4, R10, Program, Slot


def emit_map_lookup(p: Program, map_name: str, key: Slot) -> None:
    """R0 = map_name[the key in stack slot `key`], or 0 when there is none. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")


def emit_map_update(p: Program, map_name: str, key: Slot, value: Slot, flags: int) -> None:
    """map_name[the key in slot `key`] = the value in slot `value`; R0 = 0 or -errno. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.mov(R3, R10)
    p.add(R3, value.at())
    p.mov(R4, flags)
    p.call("map_update_elem")


def emit_map_delete(p: Program, map_name: str, key: Slot) -> None:
    """Delete map_name[the key in stack slot `key`]; R0 = 0 or -errno. Clobbers R0-R5."""
    p.ld_map(R1, map_name)
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_delete_elem")
