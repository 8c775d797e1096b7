"""From results to cells: what makes a cell pass, fail, n/a, skipped or empty."""
from pathlib import Path

import pytest
from matrix import junit
from matrix.junit import Outcome, TestResult
from matrix.modes import OTHER, Mode
from matrix.verdicts import Cell, State, matrix, verdict

SUPPORT = Path(__file__).resolve().parents[1] / "support"
NO_LINK = "n/a: kernel 5.10.0-46-amd64 does not support bpf_link for perf events (added in Linux 5.15): EINVAL"


def r(outcome: str, message: str = "", name: str = "t") -> TestResult:
    return TestResult(f"m::{name}", Outcome(outcome), message)


def test_the_tests_shared_helper_skips_in_the_words_the_matrix_reads_as_na(junit_of):
    """tests/support/kernel_features.require() and the matrix must not drift apart: n/a depends on both."""
    results = junit.parse(junit_of(f"""
        import sys
        sys.path.insert(0, {str(SUPPORT)!r})
        from kernel_features import require
        from gespann.bpf.features import Feature

        def test_needs_perf_links():
            require(Feature("perf_link", "bpf_link for perf events", "5.15").missing("EINVAL for BPF_PERF_EVENT"))
    """))
    cell = verdict(results)
    assert cell.state is State.NA, results
    assert "does not support bpf_link for perf events (added in Linux 5.15)" in cell.reasons[0]


@pytest.mark.parametrize("outcomes, state", [
    (["passed", "passed"], State.PASS),
    (["passed", "failed"], State.FAIL),
    (["skipped", "error"], State.FAIL),
    (["passed", "skipped"], State.PASS),
    ([], State.NONE),
])
def test_a_failure_anywhere_fails_the_cell_and_one_pass_passes_it(outcomes, state):
    assert verdict([r(o, NO_LINK, name=f"t{i}") for i, o in enumerate(outcomes)]).state is state


def test_all_skipped_for_a_missing_kernel_feature_is_not_available():
    cell = verdict([r("skipped", NO_LINK, "a"), r("skipped", NO_LINK, "b")])
    assert cell.state is State.NA
    assert cell.reasons == (NO_LINK[len("n/a: "):],)


def test_a_skip_for_another_reason_says_nothing_about_the_kernel():
    cell = verdict([r("skipped", NO_LINK, "a"), r("skipped", "needs root", "b")])
    assert (cell.state, cell.reasons) == (State.SKIPPED, (NO_LINK, "needs root"))
    assert verdict([r("skipped", "bpftool is not installed; n/a: later words do not count")]).state is State.SKIPPED


def test_a_feature_error_that_fails_a_test_is_a_failure_not_na():
    error = "gespann.bpf.errors.FeatureUnsupportedError: kernel 5.10 does not support bpf_link for perf events"
    cell = verdict([r("failed", f"{error}\nmore"), r("error", "", name="u"), r("passed", name="v")])
    assert (cell.state, cell.reasons) == (State.FAIL, (f"m::t: {error}", "m::u: (no message)"))


def test_matrix_has_a_cell_for_every_row_and_kernel():
    modes = (Mode("link", "[LINK]"),)
    results = {"5.10": [TestResult("m::a[LINK]", Outcome.SKIPPED, NO_LINK), TestResult("m::b", Outcome.PASSED)],
               "6.12": None}
    assert {row: {k: c.state for k, c in by_kernel.items()} for row, by_kernel in matrix(results, modes).items()} == {
        "link": {"5.10": State.NA, "6.12": State.NONE},
        OTHER: {"5.10": State.PASS, "6.12": State.NONE},
    }
    assert matrix({"6.12": None}, modes)["link"]["6.12"] == Cell(State.NONE)
