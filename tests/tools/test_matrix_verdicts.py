"""From results to cells: what makes a cell pass, fail, n/a, skipped or empty."""
import pytest
from matrix.junit import Outcome, TestResult
from matrix.modes import OTHER, Mode
from matrix.verdicts import FEATURE_SKIP, Cell, State, matrix, verdict

from gespann.bpf.errors import FeatureUnsupportedError

NO_LINK = "kernel 5.10.0-46-amd64 does not support bpf_link for perf events (added in Linux 5.15)"


def r(outcome: str, message: str = "", name: str = "t") -> TestResult:
    return TestResult(f"m::{name}", Outcome(outcome), message)


def test_the_skip_pattern_matches_what_feature_unsupported_error_says():
    """The pattern and the bpf layer's message must not drift apart: n/a depends on it."""
    match = FEATURE_SKIP.search(f"Skipped: {FeatureUnsupportedError('fentry programs', '5.5')}")
    assert match and (match["feature"], match["since"]) == ("fentry programs", "5.5")


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
    assert cell.reason == "does not support bpf_link for perf events (added in Linux 5.15)"


def test_a_skip_for_another_reason_says_nothing_about_the_kernel():
    cell = verdict([r("skipped", NO_LINK, "a"), r("skipped", "needs root", "b")])
    assert (cell.state, cell.reason) == (State.SKIPPED, f"{NO_LINK}; needs root")


def test_a_feature_error_that_fails_a_test_is_a_failure_not_na():
    cell = verdict([r("failed", f"gespann.bpf.errors.FeatureUnsupportedError: {NO_LINK}\nmore")])
    assert cell.state is State.FAIL
    assert cell.reason == f"m::t: gespann.bpf.errors.FeatureUnsupportedError: {NO_LINK}"


def test_matrix_has_a_cell_for_every_row_and_kernel():
    modes = (Mode("link", "[LINK]"),)
    results = {"5.10": [TestResult("m::a[LINK]", Outcome.SKIPPED, NO_LINK), TestResult("m::b", Outcome.PASSED)],
               "6.12": None}
    assert {row: {k: c.state for k, c in by_kernel.items()} for row, by_kernel in matrix(results, modes).items()} == {
        "link": {"5.10": State.NA, "6.12": State.NONE},
        OTHER: {"5.10": State.PASS, "6.12": State.NONE},
    }
    assert matrix({"6.12": None}, modes)["link"]["6.12"] == Cell(State.NONE)
