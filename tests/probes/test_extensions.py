"""Probes from outside gespann's tree: loaded from a file or a module named in the config, or refused
with a message that says which and why."""
from __future__ import annotations

from pathlib import Path

import pytest

from gespann.probes import ExtensionError, Probe, load_probes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probes" / "tcp_connects_by_port.py"


def test_the_example_is_one_probe_with_its_metric_and_reader():
    (probe,) = load_probes(str(EXAMPLE))
    assert isinstance(probe, Probe) and probe.name == "tcp_connects_by_port"
    assert [spec.name for spec in probe.metrics] == ["tcp_connects_by_remote_port_total"]
    assert probe.reader is not None


def test_loading_a_file_twice_gives_the_same_probe():
    assert load_probes(str(EXAMPLE))[0] is load_probes(str(EXAMPLE))[0]


def test_a_module_name_is_imported(tmp_path, monkeypatch):
    (tmp_path / "my_gespann_probes.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    (probe,) = load_probes("my_gespann_probes")
    assert probe.name == "tcp_connects_by_port"


def test_probes_lists_several(tmp_path):
    source = tmp_path / "two.py"
    source.write_text(f"import runpy\nPROBE_A = runpy.run_path({str(EXAMPLE)!r})['PROBE']\n"
                      "import dataclasses\nPROBES = (PROBE_A, dataclasses.replace(PROBE_A, name='second'))\n")
    assert [probe.name for probe in load_probes(str(source))] == ["tcp_connects_by_port", "second"]


@pytest.mark.parametrize("text, why", [
    ("X = 1\n", "declares no probe: define PROBE"),
    ("PROBE = 'not a probe'\n", "is not a gespann.probes.Probe"),
    ("raise RuntimeError('broken on purpose')\n", "failed to load: RuntimeError: broken on purpose"),
    ("def oops(:\n", "failed to load: SyntaxError"),
])
def test_a_bad_file_is_refused_with_the_reason(tmp_path, text, why):
    source = tmp_path / "bad_probe.py"
    source.write_text(text)
    with pytest.raises(ExtensionError, match=why.replace("(", r"\(")):
        load_probes(str(source))


def test_a_missing_file_or_module_is_named():
    with pytest.raises(ExtensionError, match="no such file"):
        load_probes("/nonexistent/probe.py")
    with pytest.raises(ExtensionError, match="module no_such_gespann_module failed to load: ModuleNotFoundError"):
        load_probes("no_such_gespann_module")
