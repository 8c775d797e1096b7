"""Test results from pytest's junit XML: one id, outcome and message per test.

The XML is what survives the trip out of a VM: the guest writes it to a
shared directory and nothing else of pytest's state comes back.
"""
from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

#: Raised by parse() for a file that is not (or not all) junit XML.
ParseError = ET.ParseError


class Outcome(enum.Enum):
    """What happened to one test; later members are worse and win when a test is reported twice."""

    PASSED = "passed"
    SKIPPED = "skipped"
    FAILED = "failed"
    ERROR = "error"  # in set-up or tear-down, or the test could not be collected

    @property
    def severity(self) -> int:
        return list(Outcome).index(self)


@dataclass(frozen=True)
class TestResult:
    """`id` is "classname::name" as junit spells them: `tests.bpf.test_maps::test_batches[HashMap]`."""

    __test__ = False  # not a pytest test class, despite the name

    id: str
    outcome: Outcome
    message: str = ""


def parse(source: str | Path) -> list[TestResult]:
    """The results in a junit XML file (a path) or document (a string starting with "<")."""
    if isinstance(source, str) and source.lstrip().startswith("<"):
        root = ET.fromstring(source)
    else:
        root = ET.parse(source).getroot()
    merged: dict[str, TestResult] = {}  # a test reported twice (failed, then a tear-down error): worst wins
    for case in root.iter("testcase"):
        result = _result(case)
        earlier = merged.get(result.id)
        if earlier is None or result.outcome.severity > earlier.outcome.severity:
            merged[result.id] = result
    return list(merged.values())


_TAGS = {"skipped": Outcome.SKIPPED, "failure": Outcome.FAILED, "error": Outcome.ERROR}


def _result(case: ET.Element) -> TestResult:
    test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
    worst = TestResult(test_id, Outcome.PASSED)
    for child in case:
        outcome = _TAGS.get(child.tag)  # other children: system-out, system-err, properties
        if outcome is not None and outcome.severity > worst.outcome.severity:
            worst = TestResult(test_id, outcome, child.get("message") or (child.text or "").strip())
    return worst
