"""The LLVM oracle, found once per session, and a tally of what was checked against it.

LLVM tests skip, saying why, where LLVM >= 18 is absent; the tally is printed
at the end of the run so every run states how much LLVM agreed with.
"""
from collections import Counter

import pytest
from llvm_oracle import LLVM, MIN_VERSION

TALLY: Counter = Counter()


@pytest.fixture(scope="session")
def llvm() -> LLVM:
    found = LLVM.find()
    if found is None:
        pytest.skip(f"needs llvm-mc, llvm-objdump and llvm-objcopy >= {MIN_VERSION} (make test installs llvm-19)")
    return found


@pytest.fixture(scope="session")
def tally() -> Counter:
    """Counts of what agreed with LLVM, by what was counted."""
    return TALLY


def pytest_terminal_summary(terminalreporter) -> None:
    if TALLY:
        terminalreporter.section("asm checked against LLVM")
        for what, count in TALLY.items():
            terminalreporter.write_line(f"{count:6d} {what}")
