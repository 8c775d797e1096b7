"""Reading pytest's junit XML back: ids, outcomes, messages, and tests reported twice."""
import pytest
from matrix import junit
from matrix.junit import Outcome, TestResult

SAMPLE = '''
    import pytest

    @pytest.fixture
    def broken_setup():
        raise RuntimeError("no tracefs")

    @pytest.fixture
    def broken_teardown():
        yield
        raise RuntimeError("left a program loaded")

    @pytest.mark.parametrize("mode", ["LINK", "PERF"])
    def test_attach(mode):
        assert mode == "LINK", "perf refused"

    def test_skipped():
        pytest.skip("n/a: kernel 5.10 does not support bpf_link for perf events (added in Linux 5.15)")

    def test_setup_error(broken_setup):
        pass

    def test_fails_then_teardown_errors(broken_teardown):
        assert False, "first failure"

    class TestGroup:
        def test_in_class(self):
            pass
'''


def test_outcomes_ids_and_messages_of_a_real_pytest_run(junit_of):
    results = {r.id: r for r in junit.parse(junit_of(SAMPLE))}
    assert {i: r.outcome for i, r in results.items()} == {
        "test_sample::test_attach[LINK]": Outcome.PASSED,
        "test_sample::test_attach[PERF]": Outcome.FAILED,
        "test_sample::test_skipped": Outcome.SKIPPED,
        "test_sample::test_setup_error": Outcome.ERROR,
        "test_sample::test_fails_then_teardown_errors": Outcome.ERROR,
        "test_sample.TestGroup::test_in_class": Outcome.PASSED,
    }
    assert "perf refused" in results["test_sample::test_attach[PERF]"].message
    assert results["test_sample::test_skipped"].message == \
        "n/a: kernel 5.10 does not support bpf_link for perf events (added in Linux 5.15)"
    assert "no tracefs" in results["test_sample::test_setup_error"].message


def test_the_worst_report_of_a_test_wins():
    xml = """<testsuites><testsuite>
      <testcase classname="m" name="t"><system-out>x</system-out></testcase>
      <testcase classname="m" name="t"><failure message="boom">trace</failure></testcase>
      <testcase classname="m" name="t"><skipped message="later"/></testcase>
      <testcase classname="m" name="u"><failure>only a trace</failure></testcase>
    </testsuite></testsuites>"""
    assert junit.parse(xml) == [TestResult("m::t", Outcome.FAILED, "boom"),
                                TestResult("m::u", Outcome.FAILED, "only a trace")]


def test_a_truncated_file_is_a_parse_error(tmp_path):
    (tmp_path / "cut.xml").write_text('<testsuites><testsuite><testcase classname="m" name="t">')
    with pytest.raises(junit.ParseError):
        junit.parse(tmp_path / "cut.xml")
