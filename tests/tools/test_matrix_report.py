"""The table people read and the JSON programs read, and when the matrix counts as passed."""
from pathlib import Path

from matrix.junit import Outcome, TestResult
from matrix.modes import OTHER, Mode, rows
from matrix.report import Report
from matrix.runner import KernelRun, Status
from matrix.verdicts import matrix

MODES = (Mode("tracepoint/link", "[LINK]"), Mode("reader/perf", "[perf]"))
NO_LINK = "n/a: kernel 5.10.0-46-amd64 does not support bpf_link for perf events (added in Linux 5.15)"


def run(name, release, results, status=Status.OK, **timing):
    return KernelRun(name, release, status, results=results, **timing)


def report_of(*runs):
    return Report(rows(MODES), list(runs), matrix({r.name: r.results for r in runs}, MODES),
                  commit="abc123", wall_s=612.4)


OLD = run("5.10", "5.10.0-46-amd64", [TestResult("m::t[LINK]", Outcome.SKIPPED, NO_LINK),
                                      TestResult("m::t[perf]", Outcome.PASSED),
                                      TestResult("m::u", Outcome.PASSED)], boot_s=17.6, test_s=150.2, total_s=171)
HOST = run("host", "6.18.1", [TestResult("m::t[LINK]", Outcome.PASSED), TestResult("m::t[perf]", Outcome.PASSED),
                              TestResult("m::u", Outcome.FAILED, "AssertionError: 3 != 4\ntrace")], test_s=4, total_s=4)


def test_markdown_puts_kernels_across_and_modes_down():
    text = report_of(OLD, HOST).markdown()
    assert """
| mode | 5.10 | host |
|---|---|---|
| tracepoint/link | n/a | pass |
| reader/perf | pass | pass |
| other root tests | pass | fail |
""" in text
    assert "| 5.10 | 5.10.0-46-amd64 | ok | 18 s | 150 s | 171 s | 2 passed, 1 skipped |" in text
    assert "| host | 6.18.1 | ok | — | 4 s | 4 s | 2 passed, 1 failed |" in text
    assert "- host, other root tests: m::u: AssertionError: 3 != 4\n" in text
    assert f"- 5.10, tracepoint/link: {NO_LINK[5:]}\n" in text
    assert "Commit abc123; the whole matrix took 612 s." in text


def test_a_failed_cell_or_an_unfinished_kernel_fails_the_matrix():
    assert report_of(OLD).passed
    assert not report_of(OLD, HOST).passed
    crashed = run("6.12", "6.12.1", None, Status.NO_BOOT, total_s=30)
    crashed.detail, crashed.logs = "Kernel panic - not syncing", [Path("/r/6.12.console.log")]
    report = report_of(OLD, crashed)
    assert not report.passed
    text = report.markdown()
    assert "| other root tests | pass | — |" in text
    assert "- 6.12 (6.12.1): did not boot; logs: /r/6.12.console.log\n\n```\nKernel panic - not syncing\n```" in text


def test_json_has_the_same_facts():
    data = report_of(OLD, HOST).to_json()
    assert data["rows"] == ["tracepoint/link", "reader/perf", OTHER]
    assert data["passed"] is False
    assert data["kernels"][0] == {"name": "5.10", "release": "5.10.0-46-amd64", "status": "ok", "detail": "",
                                  "boot_s": 17.6, "test_s": 150.2, "total_s": 171, "logs": [],
                                  "counts": {"passed": 2, "skipped": 1}}
    assert data["cells"]["tracepoint/link"]["5.10"] == {
        "state": "n/a", "reasons": [NO_LINK[len("n/a: "):]],
        "tests": {"m::t[LINK]": "skipped"}}
    assert data["cells"][OTHER]["host"]["state"] == "fail"


def test_a_cell_with_several_reasons_lists_each():
    broken = run("6.1", "6.1.0-37-amd64", [TestResult("m::a[perf]", Outcome.FAILED, "lost 3\nmore"),
                                          TestResult("m::b[perf]", Outcome.ERROR, "no tracefs")])
    assert "- 6.1, reader/perf:\n  - m::a[perf]: lost 3\n  - m::b[perf]: no tracefs\n" in report_of(broken).markdown()
