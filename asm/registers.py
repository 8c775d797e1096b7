"""The eleven eBPF registers, as a type the DSL can tell apart from immediates."""
from __future__ import annotations

from enum import IntEnum


class Register(IntEnum):
    """R0 holds return values, R1-R5 arguments, R6-R9 survive calls, R10 is the read-only frame pointer."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10

    def __repr__(self) -> str:
        return self.name


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = Register
