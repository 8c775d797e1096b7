"""The matrix as people and programs read it: a markdown table, and the same facts as JSON.

Kernels run across and modes down. Under the table: how long each kernel
took to boot and to test, then every failure, every n/a with the feature the
kernel lacks, and every run that did not finish, with the end of its log.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from .junit import Outcome
from .runner import KernelRun
from .verdicts import Cell, State

_SYMBOL = {State.NONE: "—"}


@dataclass
class Report:
    """One run of the matrix: rows (mode names), one KernelRun per column, and row -> kernel -> Cell."""

    rows: list[str]
    runs: list[KernelRun]
    cells: dict[str, dict[str, Cell]]
    commit: str = ""
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        """No cell failed and every kernel ran the suite to the end."""
        return all(run.ok for run in self.runs) and not any(
            cell.state is State.FAIL for by_kernel in self.cells.values() for cell in by_kernel.values())

    def cell(self, row: str, kernel: str) -> Cell:
        return self.cells.get(row, {}).get(kernel, Cell(State.NONE))

    def markdown(self) -> str:
        kernels = [run.name for run in self.runs]
        lines = ["# gespann kernel matrix", ""]
        if self.commit:
            lines += [f"Commit {self.commit}; the whole matrix took {_seconds(self.wall_s)}.", ""]
        lines += _table(["mode", *kernels],
                        [[row, *(_SYMBOL.get(s, s.value) for s in (self.cell(row, k).state for k in kernels))]
                         for row in self.rows])
        lines += [""]
        lines += _table(["kernel", "release", "status", "boot", "tests", "total", "results"],
                        [[r.name, r.release, r.status.value, _seconds(r.boot_s), _seconds(r.test_s),
                          _seconds(r.total_s), _counts(r)] for r in self.runs])
        lines += self._notes("Failures", State.FAIL)
        lines += self._notes("Not available on the kernel", State.NA)
        lines += self._notes("Skipped, not for a kernel reason", State.SKIPPED)
        unfinished = [r for r in self.runs if not r.ok]
        if unfinished:
            lines += ["", "## Runs that did not finish", ""]
            for r in unfinished:
                lines += [f"- {r.name} ({r.release}): {r.status.value}; logs: {', '.join(map(str, r.logs)) or 'none'}",
                          "", "```", r.detail.rstrip(), "```"]
        return "\n".join(lines) + "\n"

    def _notes(self, title: str, state: State) -> list[str]:
        notes = []
        for row in self.rows:
            for kernel in (r.name for r in self.runs):
                cell = self.cell(row, kernel)
                if cell.state is not state:
                    continue
                if len(cell.reasons) == 1:
                    notes.append(f"- {kernel}, {row}: {cell.reasons[0]}")
                else:
                    notes += [f"- {kernel}, {row}:", *(f"  - {reason}" for reason in cell.reasons)]
        return ["", f"## {title}", "", *notes] if notes else []

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "wall_s": _round(self.wall_s),
            "rows": self.rows,
            "kernels": [{
                "name": r.name, "release": r.release, "status": r.status.value, "detail": r.detail,
                "boot_s": _round(r.boot_s), "test_s": _round(r.test_s), "total_s": _round(r.total_s),
                "counts": _count_map(r), "logs": [str(p) for p in r.logs],
            } for r in self.runs],
            "cells": {row: {r.name: _cell_json(self.cell(row, r.name)) for r in self.runs} for row in self.rows},
            "passed": self.passed,
        }


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {"state": cell.state.value, "reasons": list(cell.reasons),
            "tests": {r.id: r.outcome.value for r in cell.results}}


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in body)]


def _count_map(run: KernelRun) -> dict[str, int]:
    counted = collections.Counter(r.outcome for r in run.results or ())
    return {o.value: counted[o] for o in Outcome if counted[o]}


def _counts(run: KernelRun) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in _count_map(run).items()) or "—"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
