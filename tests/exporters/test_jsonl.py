"""The jsonl exporter: events appended to a file as JSON lines, as soon as they come and on close."""

from __future__ import annotations

import json
import time

import pytest
from exporter_figures import FIGURES_A, FedCollector, event

from gespann.exporters import ExporterError, JsonlExporter, json_line


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_lines(path, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while not path.exists() or len(path.read_text().splitlines()) < count:
        assert time.monotonic() < deadline, f"{count} lines never appeared"
        time.sleep(0.01)
    return read_lines(path)


def test_events_appear_line_by_line_while_running(tmp_path):
    path = tmp_path / "events.jsonl"
    collector = FedCollector(FIGURES_A)
    exporter = JsonlExporter(collector, str(path), wait=0.05)
    exporter.start()
    try:
        collector.feed(event(pid=1), event(pid=2))
        assert [line["pid"] for line in wait_for_lines(path, 2)] == [1, 2]
    finally:
        exporter.close()


def test_close_writes_what_is_still_waiting_and_appends_on_restart(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json_line(event(pid=0)) + "\n")
    collector = FedCollector(FIGURES_A)
    exporter = JsonlExporter(collector, str(path), wait=0.05)
    exporter.start()
    collector.feed(*(event(pid=n) for n in range(1, 6)))
    exporter.close()
    assert [line["pid"] for line in read_lines(path)] == [0, 1, 2, 3, 4, 5]
    assert path.read_text().endswith("\n")


def test_lines_are_the_trace_json_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    exporter = JsonlExporter(FedCollector(FIGURES_A), str(path))
    exporter.start()
    exporter.write(event(outcome="reset", reason="sent"))
    exporter.close()
    assert path.read_text() == json_line(event(outcome="reset", reason="sent")) + "\n"


def test_an_unwritable_path_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-directory" / "events.jsonl"
    with pytest.raises(ExporterError, match="no-such-directory"):
        JsonlExporter(FedCollector(FIGURES_A), str(missing)).start()


def test_describe(tmp_path):
    assert JsonlExporter(FedCollector(FIGURES_A), "/var/log/gespann.jsonl").describe() == "jsonl /var/log/gespann.jsonl"
