"""Exporter kinds: a new exporter is one module's KIND and one registration; config, build and run follow from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from exporter_figures import FIGURES_A, FedCollector, event

from gespann import config
from gespann.exporters import KINDS, JsonlExporter, build_exporters, wants_events
from gespann.exporters.kinds import REQUIRED, ExporterKind, Setting
from gespann.settings import positive_int, text

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


class KeptEvents:
    """A toy exporter: on close, keeps up to `limit` of the collector's waiting events, under `label`."""

    def __init__(self, collector, label: str, limit: int):
        self.collector, self.label, self.limit = collector, label, limit
        self.kept: list = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.kept = list(self.collector.events(timeout=0))[:self.limit]

    def describe(self) -> str:
        return f"kept {self.label} (at most {self.limit})"


TOY = ExporterKind("kept", "events kept in memory", settings=(
    Setting("label", text("a label"), "what the kept events are called", REQUIRED),
    Setting("limit", positive_int, "most events kept", 2),
), build=lambda settings, context: KeptEvents(context.collector, settings["label"], settings["limit"]),
    consumes_events=True)


@pytest.fixture
def toy_registered():
    KINDS.register(TOY)  # what exporters/__init__.py would say in one line
    yield
    KINDS.remove(TOY.type)


def test_an_unregistered_kind_is_refused_naming_the_key_and_the_known_types():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"exporters": [{"type": "prometheus"}, {"type": "kept", "settings": {"label": "x"}}]})
    assert err.value.key == "exporters[1].type"
    assert err.value.problem == "unknown exporter type 'kept'; expected one of: prometheus, datadog, jsonl"


def test_a_new_kind_is_one_registration(toy_registered):
    configured = config.parse({"exporters": [{"type": "prometheus", "settings": {"address": "127.0.0.1"}},
                                             {"type": "kept", "settings": {"label": "ends"}}]}).exporters
    assert configured[1] == config.ExporterConfig("kept", {"label": "ends", "limit": 2})  # the default filled in
    assert wants_events(configured) and not wants_events(configured[:1])

    collector = FedCollector(FIGURES_A)
    prometheus, kept = build_exporters(configured, collector)
    assert isinstance(kept, KeptEvents) and kept.describe() == "kept ends (at most 2)"
    kept.start()
    collector.feed(event(pid=1), event(pid=2), event(pid=3))
    kept.close()
    assert [e.pid for e in kept.kept] == [1, 2]


@pytest.mark.parametrize("settings, key, words", [
    ({}, "exporters[0].settings.label", "missing"),
    ({"label": None}, "exporters[0].settings.label", "missing"),
    ({"label": "x", "limit": 0}, "exporters[0].settings.limit", "at least 1"),
    ({"label": "a\nb"}, "exporters[0].settings.label", "expected a label"),
    ({"label": "x", "size": 3}, "exporters[0].settings.size", "unknown key; expected one of: label, limit"),
])
def test_a_new_kinds_settings_are_checked_from_its_declaration(toy_registered, settings, key, words):
    with pytest.raises(config.ConfigError) as err:
        config.parse({"exporters": [{"type": "kept", "settings": settings}]})
    assert err.value.key == key and words in err.value.problem


def test_a_registered_type_name_is_taken():
    with pytest.raises(ValueError, match="'jsonl' is registered already"):
        KINDS.register(ExporterKind("jsonl", "another", (), build=lambda settings, context: None))


@pytest.mark.parametrize("types, wanted", [
    ((), False),
    (("prometheus",), False),
    (("datadog",), False),
    (("prometheus", "datadog"), False),
    (("jsonl",), True),
    (("prometheus", "jsonl"), True),
    (("datadog", "jsonl", "prometheus"), True),
])
def test_events_are_wanted_exactly_when_a_consuming_exporter_is_configured(tmp_path, types, wanted):
    items = [{"type": name, "settings": {"path": str(tmp_path / "e.jsonl")} if name == "jsonl" else {}}
             for name in types]
    configured = config.parse({"exporters": items}).exporters
    assert wants_events(configured) is wanted
    built = build_exporters(configured, FedCollector(FIGURES_A))
    assert any(isinstance(exporter, JsonlExporter) for exporter in built) is wanted


def test_only_jsonl_consumes_events_among_the_kinds_gespann_has():
    assert [name for name in KINDS if KINDS[name].consumes_events] == ["jsonl"]


def test_the_config_doc_documents_every_setting_of_every_kind():
    doc = CONFIG_DOC.read_text()
    for name in KINDS:
        section = re.search(rf"^#### `{name}`\n(.*?)(?=^#|\Z)", doc, re.M | re.S)
        assert section, f"docs/config.md has no section for the {name} exporter"
        for setting in KINDS[name].settings:
            assert f"| `exporters[].settings.{setting.name}` |" in section.group(1), \
                f"docs/config.md's {name} section leaves out {setting.name}"
