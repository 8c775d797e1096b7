"""Records on a program's stack: the one rule every probe that builds one must follow.

Helpers (map updates, ring-buffer output) may read only initialised stack
bytes, padding included, so a record built on the stack is zeroed whole first.
"""

from __future__ import annotations

from asm import DW, R10, Program, Slot


def emit_zero(p: Program, slot: Slot) -> None:
    """Zero the stack `slot` whole (frames align slots to 8 bytes), one doubleword store at a time."""
    for word in slot.words():
        p.st(DW, R10, word, 0)
