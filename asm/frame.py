"""Stack frames: named slots on a program's stack, placed by the frame, not by hand.

A program's stack is the 512 bytes below R10. A `Frame` hands out `Slot`s from
it, each 8-byte aligned and sized by the `Record` it holds (or a byte count),
growing down from R10 in the order they are asked for. A slot knows where it
is, so code names what it stores, never a number:

    key = p.frame.alloc("key", KEY)         # a Record's worth of stack
    tmp = p.frame.alloc("tmp", size=8)
    p.stx(W, R10, key.at("netns"), R1)      # R10 + the field's offset
    with p.frame.scope():                   # slots made here are given back at its end
        scratch = p.frame.alloc("scratch", size=8)

A slot used after its scope has ended raises, as does a frame that would pass
the stack limit: the error lists the slots that fill it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from .errors import AsmError
from .record import Field, Record

#: The eBPF stack: bytes below R10 a program may use (MAX_BPF_STACK).
STACK_LIMIT = 512
ALIGNMENT = 8


class Slot:
    """A span of the stack, `size` bytes from R10 + `offset` (negative), holding a `record` or raw bytes."""

    def __init__(self, frame: Frame, name: str, offset: int, size: int, record: Optional[Record]) -> None:
        self._frame = frame
        self.name = name
        self._offset = offset
        self.size = size
        self.record = record
        self.released = False

    def __repr__(self) -> str:
        state = ", released" if self.released else ""
        return f"Slot({self.name!r}, {self.size} bytes at R10 {self._offset}{state})"

    @property
    def offset(self) -> int:
        """The slot's start, from R10 (negative)."""
        if self.released:
            raise AsmError(f"{self._frame.owner}: slot {self.name!r} is used after its scope ended")
        return self._offset

    def field(self, name: str) -> Field:
        """The `Field` of the slot's record named `name`."""
        if self.record is None:
            raise AsmError(f"{self._frame.owner}: slot {self.name!r} holds {self.size} raw bytes, no record fields")
        return self.record.field(name)

    def at(self, *path: str | int) -> int:
        """The R10 offset of a place in the slot: its start, plus each record field named and each byte
        count given (`at("comm", 8)`: the second word of comm; `at(9)`: byte 9)."""
        within = 0
        for step in path:
            within += self.field(step).offset if isinstance(step, str) else step
        if not 0 <= within < self.size:
            raise AsmError(f"{self._frame.owner}: byte {within} is outside slot {self.name!r} ({self.size} bytes)")
        return self.offset + within

    def words(self) -> range:
        """The R10 offsets of the slot's 8-byte words, start first: to zero or copy it whole."""
        return range(self.offset, self.offset + self.size, ALIGNMENT)


class Frame:
    """The stack slots of one program; `owner` names the program in errors."""

    def __init__(self, owner: str = "program", limit: int = STACK_LIMIT) -> None:
        self.owner = owner
        self.limit = limit
        self._live: list[Slot] = []
        self._depth = 0

    def __repr__(self) -> str:
        return f"Frame({self.owner!r}, {self.used} bytes in use, {self._depth} at most)"

    @property
    def used(self) -> int:
        """Bytes below R10 the live slots take, alignment included."""
        return -self._live[-1].offset if self._live else 0

    @property
    def depth(self) -> int:
        """The most bytes the frame ever took: the program's stack depth."""
        return self._depth

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The live slots, nearest R10 first."""
        return tuple(self._live)

    def alloc(self, name: str, record: Optional[Record] = None, *, size: Optional[int] = None) -> Slot:
        """A new slot below the others: `record`'s size, or `size` bytes, rounded up to 8."""
        if (record is None) == (size is None):
            raise AsmError(f"{self.owner}: slot {name!r} needs a record or a size, and not both")
        if record is not None and not isinstance(record, Record):
            raise AsmError(f"{self.owner}: slot {name!r} holds a Record, not {record!r}")
        size = record.size if record is not None else size
        if not isinstance(size, int) or size < 1:
            raise AsmError(f"{self.owner}: slot {name!r} needs a positive size, not {size!r}")
        top = self.used + -(-size // ALIGNMENT) * ALIGNMENT
        if top > self.limit:
            taken = ", ".join(f"{slot.name} ({slot.size})" for slot in self._live) or "none"
            raise AsmError(f"{self.owner}: slot {name!r} ({size} bytes) takes the stack to {top} bytes, past the "
                           f"limit of {self.limit}; slots in use: {taken}")
        slot = Slot(self, name, -top, size, record)
        self._live.append(slot)
        self._depth = max(self._depth, top)
        return slot

    @contextlib.contextmanager
    def scope(self) -> Iterator[Frame]:
        """Slots allocated inside the block are released at its end, for later slots to reuse."""
        mark = len(self._live)
        try:
            yield self
        finally:
            for slot in self._live[mark:]:
                slot.released = True
            del self._live[mark:]
