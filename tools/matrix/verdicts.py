"""From test results to one verdict per cell: pass, fail, n/a, skipped, or none.

n/a is a claim about the kernel, so the tests must make it: every test of the
cell skipped with a reason that starts with "n/a:", as tests/support/
kernel_features.require() does with the bpf layer's FeatureUnsupportedError
("n/a: kernel R does not support F (added in Linux V): why"). A skip for any
other reason (no root, a missing oracle) says nothing about the kernel and
shows as `skipped`. A test that fails on an unsupported feature stays a
failure: it should have skipped.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .junit import Outcome, TestResult
from .modes import MODES, Mode, group

#: How a skip reason says "not available on this kernel".
NOT_AVAILABLE = "n/a:"


class State(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    NA = "n/a"  # the kernel lacks what these tests need
    SKIPPED = "skipped"  # skipped for a reason that is not the kernel's
    NONE = "none"  # no test of this row ran on this kernel


@dataclass(frozen=True)
class Cell:
    """One kernel's verdict on one row, with the results behind it. `reasons` explain fail (one per
    broken test), n/a and skipped (one per distinct skip reason)."""

    state: State
    results: tuple[TestResult, ...] = field(default=())
    reasons: tuple[str, ...] = field(default=())


def is_not_available(result: TestResult) -> bool:
    return result.outcome is Outcome.SKIPPED and result.message.startswith(NOT_AVAILABLE)


def verdict(results: Sequence[TestResult]) -> Cell:
    """Any failure or error fails the cell; otherwise one pass passes it; all-skipped is n/a or skipped."""
    results = tuple(results)
    broken = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.ERROR)]
    if broken:
        return Cell(State.FAIL, results, tuple(f"{r.id}: {_first_line(r.message)}" for r in broken))
    if any(r.outcome is Outcome.PASSED for r in results):
        return Cell(State.PASS, results)
    if not results:
        return Cell(State.NONE)
    if all(map(is_not_available, results)):
        return Cell(State.NA, results, _distinct(r.message[len(NOT_AVAILABLE):] for r in results))
    return Cell(State.SKIPPED, results, _distinct(r.message for r in results))


def matrix(results_by_kernel: Mapping[str, Sequence[TestResult] | None],
           modes: Sequence[Mode] = MODES) -> dict[str, dict[str, Cell]]:
    """row -> kernel -> Cell. A kernel whose results are None (it never ran the suite) has NONE cells."""
    table: dict[str, dict[str, Cell]] = {}
    for kernel, results in results_by_kernel.items():
        by_row = group(results or (), lambda r: r.id, modes)
        for row, row_results in by_row.items():
            table.setdefault(row, {})[kernel] = verdict(row_results)
    return table


def _distinct(messages: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({_first_line(m) for m in messages}))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"
