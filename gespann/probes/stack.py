"""Records on a program's stack: the one rule every probe that builds one must follow.

Helpers (map updates, ring-buffer output) may read only initialised stack
bytes, padding included, so a record built on the stack is zeroed whole first.
"""

from __future__ import annotations

from asm import DW, R10, Program, Record


def emit_zero(p: Program, record: Record, at: int) -> None:
    """Zero the `record` at R10 + `at` (8-aligned), one doubleword store at a time."""
    for offset in range(0, record.size, 8):
        p.st(DW, R10, at + offset, 0)
