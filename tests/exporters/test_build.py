"""From the config's exporters to running exporters: one per configured exporter, in order, wired together."""

from __future__ import annotations

import urllib.request

from dogstatsd_agent import FakeAgent
from exporter_figures import FIGURES_A, FedCollector
from prometheus_server import free_port

from gespann import config
from gespann.exporters import DogStatsdExporter, JsonlExporter, PrometheusExporter, build_exporters


def exporters(*items: dict):
    return config.parse({"exporters": list(items)}).exporters


def test_one_exporter_per_configured_one_in_config_order(tmp_path):
    built = build_exporters(exporters(
        {"type": "jsonl", "settings": {"path": str(tmp_path / "e.jsonl")}},
        {"type": "prometheus", "settings": {"port": "9100", "address": "127.0.0.1", "path": "/m"}},
        {"type": "datadog", "settings": {"host": "agent.local:18125", "prefix": "net"}},
    ), FedCollector(FIGURES_A))
    assert [type(exporter) for exporter in built] == [JsonlExporter, PrometheusExporter, DogStatsdExporter]
    assert [exporter.describe() for exporter in built] == [
        f"jsonl {tmp_path / 'e.jsonl'}",
        "prometheus http://127.0.0.1:9100/m",
        "datadog dogstatsd agent.local:18125 every 10s as net.*",
    ]


def test_defaults():
    built = build_exporters(config.Config().exporters + exporters({"type": "datadog"}), FedCollector(FIGURES_A))
    assert [exporter.describe() for exporter in built] == [
        "prometheus http://0.0.0.0:8080/metrics", "datadog dogstatsd localhost:8125 every 10s as gespann.*"]


def test_agent_address_from_datadog_variables_when_the_config_names_none(monkeypatch):
    monkeypatch.setenv("DD_AGENT_HOST", "10.1.2.3")
    monkeypatch.setenv("DD_DOGSTATSD_PORT", "8126")
    [exporter] = build_exporters(exporters({"type": "datadog"}), FedCollector(FIGURES_A))
    assert exporter.describe().startswith("datadog dogstatsd 10.1.2.3:8126 ")
    [configured] = build_exporters(exporters({"type": "datadog", "settings": {"host": "[::1]:9125"}}),
                                   FedCollector(FIGURES_A))
    assert configured.describe().startswith("datadog dogstatsd ::1:9125 ")


def test_tags_as_a_list_or_a_mapping(monkeypatch):
    for variable in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DATADOG_TAGS"):
        monkeypatch.delenv(variable, raising=False)
    agent = FakeAgent()
    try:
        for tags in (["env:prod", "team:net"], {"env": "prod", "team": "net"}):
            [exporter] = build_exporters(exporters({"type": "datadog", "settings": {
                "host": f"127.0.0.1:{agent.port}", "tags": tags}}), FedCollector(FIGURES_A))
            exporter.flush()
            assert {line.tags[-2:] for line in agent.lines()} == {("env:prod", "team:net")}
    finally:
        agent.close()


def test_prometheus_shows_what_datadog_could_not_send():
    collector = FedCollector(FIGURES_A)
    prometheus, datadog = build_exporters(exporters(
        {"type": "prometheus", "settings": {"address": "127.0.0.1", "port": free_port()}},
        {"type": "datadog", "settings": {"host": f"127.0.0.1:{free_port()}"}},
    ), collector)
    prometheus.start()
    try:
        datadog.flush()
        unsent = datadog.unsent()
        with urllib.request.urlopen(prometheus.url, timeout=5) as response:
            page = response.read().decode()
    finally:
        prometheus.close()
        datadog.close()
    assert unsent > 0
    assert f"gespann_datadog_unsent_total {unsent}.0\n" in page
