"""Helpers for the tests of tools/: the scripts on sys.path, and real pytest runs to read back.

tools/ holds scripts, not a package, so the tests import them as the scripts
import each other: from the tools directory on sys.path.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))


@pytest.fixture
def junit_of(tmp_path):
    """junit_of(source) runs the test module `source` in a pytest of its own and returns its junit XML path.
    Reading what pytest really writes keeps the parser honest about the format."""
    def run(source: str) -> Path:
        (tmp_path / "test_sample.py").write_text(textwrap.dedent(source))
        xml = tmp_path / "sample.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        "test_sample.py"], cwd=tmp_path, capture_output=True, check=False)
        return xml
    return run
