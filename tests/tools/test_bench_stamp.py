"""A section's stamp says the machine's state before the section ran, not what the section made of it."""
import importlib.util
from pathlib import Path


def bench_script():
    spec = importlib.util.spec_from_file_location("bench_script", Path(__file__).parents[2] / "tools" / "bench.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_load_average_is_taken_before_the_section_runs(monkeypatch):
    script = bench_script()
    load = [(0.25, 0.5, 0.75)]
    monkeypatch.setattr(script.os, "getloadavg", lambda: load[0])

    def section():  # a section that loads the machine
        load[0] = (5.0, 4.0, 3.0)
        return {"figure": 1}

    stamped = script.stamped(script.parse_args([]), section)
    assert stamped["figure"] == 1
    assert stamped["measured"]["load_before"] == "0.25 0.50 0.75"
