"""Collecting on the host which files hold the selected tests, for the guests to import only those."""
import sys
import textwrap
from pathlib import Path

import pytest
from matrix import selection

PYTHON = Path(sys.executable)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    root: needs a kernel\n")
    (tmp_path / "tests" / "kernel").mkdir(parents=True)
    (tmp_path / "tests" / "kernel" / "test_attach.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.root
        @pytest.mark.parametrize("mode", ["link", "ioctl"])
        def test_attach(mode):
            pass

        def test_parse():
            pass
    """))
    (tmp_path / "tests" / "test_pure.py").write_text("def test_pure():\n    pass\n")
    return tmp_path


def test_only_files_with_a_selected_test_once_each_relative_to_the_repository(repo, tmp_path_factory):
    assert selection.files_with_tests(PYTHON, repo, ["tests"], ["-m", "root", "-v"]) == \
        ["tests/kernel/test_attach.py"]
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "test_x.py"
    elsewhere.write_text("def test_x():\n    pass\n")
    assert selection.files_with_tests(PYTHON, repo, [str(elsewhere)], []) == [str(elsewhere)]


def test_nothing_selected_is_no_files(repo):
    assert selection.files_with_tests(PYTHON, repo, ["tests"], ["-m", "no_such_marker"]) == []


def test_a_collection_error_is_reported_with_pytest_s_words(repo):
    (repo / "tests" / "test_broken.py").write_text("import no_such_module\n")
    with pytest.raises(selection.SelectionError, match="status 2:(.|\n)*ERROR tests/test_broken.py"):
        selection.files_with_tests(PYTHON, repo, ["tests"], [])
