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


@pytest.mark.root
def test_a_full_disk_leaves_out_whole_batches_counted_and_writing_resumes(tmp_path, caplog):
    """On a tmpfs of 64 KiB: what does not fit is counted, the file holds whole lines only, one error is
    logged however many batches fail, and lines are appended again once a filler file is deleted."""
    from tiny_disk import fill, tiny_tmpfs

    with tiny_tmpfs(tmp_path / "disk") as disk:
        path = disk / "events.jsonl"
        exporter = JsonlExporter(FedCollector(FIGURES_A), str(path))
        exporter.start()
        try:
            filler = fill(disk)
            batches = [[event(pid=n * 10 + k) for k in range(5)] for n in range(40)]
            with caplog.at_level("INFO", logger="gespann.exporters.jsonl"):
                for batch in batches[:20]:
                    exporter.write_batch(batch)
                written = read_lines(path) if path.exists() else []
                assert exporter.unwritten() + len(written) == 100
                assert exporter.unwritten() >= 5 and exporter.unwritten() % 5 == 0  # whole batches
                assert path.read_text().endswith("\n") or not written
                filler.unlink()
                for batch in batches[20:]:
                    exporter.write_batch(batch)
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1 and "No space left on device" in errors[0].getMessage(), errors
            assert any("writing to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
            assert [line["pid"] for line in read_lines(path)[-100:]] == [e.pid for b in batches[20:] for e in b]
            (metric,) = exporter.self_metrics()
            assert metric.name == "jsonl_unwritten_total" and metric.series[()] == exporter.unwritten()
        finally:
            exporter.close()
