"""The Prometheus exporter on its own: its page, its HTTP server's life cycle, and scrape-time semantics."""

from __future__ import annotations

import math
import socket
import urllib.error
import urllib.request

import pytest
from exporter_figures import FIGURES_A, FIGURES_B, ORIGINAL_A, FedCollector, catalogue_samples, snapshot
from prometheus_client.parser import text_string_to_metric_families

from gespann.collector import Kind, Metric, labels
from gespann.exporters import ExporterError, PrometheusExporter
from gespann.exporters.legacy_names import LEGACY_METRICS


@pytest.fixture
def serving():
    collector = FedCollector(FIGURES_A)
    exporter = PrometheusExporter(collector, address="127.0.0.1", port=0)
    exporter.start()
    yield collector, exporter
    exporter.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def samples(page: str) -> dict[str, dict[frozenset, float]]:
    found: dict[str, dict[frozenset, float]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def scrape_once(collector, **settings) -> dict[str, dict[frozenset, float]]:
    """The samples of one scrape of an exporter started for it and closed after."""
    exporter = PrometheusExporter(collector, address="127.0.0.1", port=0, **settings)
    exporter.start()
    try:
        return samples(scrape(exporter.url))
    finally:
        exporter.close()


def types(page: str) -> dict[str, str]:
    return dict(line.split()[2:4] for line in page.splitlines() if line.startswith("# TYPE "))


def test_page_has_every_name_with_exact_values(serving):
    _, exporter = serving
    page = samples(scrape(exporter.url))
    for name, expected in {**ORIGINAL_A, **catalogue_samples(FIGURES_A)}.items():
        # the text parser keeps the empty labels that Prometheus drops
        got = {frozenset((label, text) for label, text in key if text): value for key, value in page[name].items()}
        assert got == expected, name


def test_a_scraper_asking_for_openmetrics_gets_the_same_samples_in_it(serving):
    """Both pages of one snapshot, each read by prometheus-client's own parser for its format."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    _, exporter = serving
    asked = urllib.request.Request(exporter.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(asked, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        page = response.read().decode()
    assert page.endswith("# EOF\n")
    read = {sample.name: sample.value for family in openmetrics_families(page) for sample in family.samples
            if not sample.name.startswith(("process_", "gespann_metrics_page_"))}
    text = {name: value for name, series in samples(scrape(exporter.url)).items() for value in series.values()
            if not name.startswith(("process_", "gespann_metrics_page_"))}
    assert read.keys() == text.keys()
    units = {family.name: family.unit for family in openmetrics_families(page) if family.unit}
    assert units["gespann_rtt_seconds"] == "seconds" and units["process_resident_memory_bytes"] == "bytes"
    assert units["gespann_bytes"] == "bytes"  # gespann_bytes_total, a counter: its family is named without _total


def test_families_have_the_types_dashboards_rely_on(serving):
    _, exporter = serving
    declared = types(scrape(exporter.url))
    assert declared["gespann_total_connections"] == "untyped"
    assert "gespann_total_connections_total" not in declared
    assert declared["gespann_closed_connections_total"] == "counter"
    assert declared["gespann_open_connections"] == "gauge"
    assert declared["gespann_avg_rtt_microseconds"] == "gauge"
    assert declared["gespann_rtt_seconds"] == "histogram"
    assert declared["gespann_connection_duration_seconds"] == "histogram"
    assert declared["gespann_probe_info"] == "gauge"
    assert any(name.startswith("process_") for name in declared), "gespann's own CPU and memory"


def test_repeated_scrapes_add_nothing(serving):
    """The original re-added totals on every tick; here a scrape only reads the snapshot."""
    _, exporter = serving
    pages = [samples(scrape(exporter.url)) for _ in range(3)]
    for name in ORIGINAL_A:
        assert pages[0][name] == pages[1][name] == pages[2][name], name


def test_a_scrape_sees_the_latest_snapshot(serving):
    collector, exporter = serving
    collector.change_to(FIGURES_B)
    page = samples(scrape(exporter.url))
    assert page["gespann_total_connections"] == {frozenset(): 25}
    assert page["gespann_avg_rtt_microseconds"] == {frozenset(): 3906.25}


def test_mean_of_no_observations_is_nan_and_totals_are_zero():
    page = scrape_once(FedCollector(snapshot(0.0)))
    assert math.isnan(page["gespann_avg_rtt_microseconds"][frozenset()])
    assert math.isnan(page["gespann_avg_connection_duration_ms"][frozenset()])
    assert page["gespann_total_connections"] == {frozenset(): 0}
    assert page["gespann_tcp_connections_total"] == {frozenset(): 0}


def test_labels_beyond_the_catalogue_pass_through():
    """Per-process labels are the collector's opt-in; the exporter shows whatever series it gets."""
    figures = snapshot(0.0, connections_opened_total={
        labels(protocol="tcp", role="client", comm="curl"): 2,
        labels(protocol="tcp", role="client", comm="other"): 5})
    page = scrape_once(FedCollector(figures))
    assert page["gespann_connections_opened_total"] == {
        frozenset({"protocol": "tcp", "role": "client", "comm": "curl"}.items()): 2,
        frozenset({"protocol": "tcp", "role": "client", "comm": "other"}.items()): 5}
    assert page["gespann_tcp_connections_total"] == {frozenset(): 7}


def test_self_metric_sources_are_exposed():
    class Unsent:
        def self_metrics(self):
            return [Metric("datadog_unsent_total", Kind.COUNTER, "lines not sent", {(): 9})]

    page = scrape_once(FedCollector(FIGURES_A), self_metric_sources=[Unsent()])
    assert page["gespann_datadog_unsent_total"] == {frozenset(): 9}


def test_only_the_configured_path_serves_metrics():
    exporter = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=0, path="/gespann")
    exporter.start()
    try:
        assert "gespann_open_connections" in scrape(exporter.url)
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(f"http://127.0.0.1:{exporter.port}/metrics")
        assert refused.value.code == 404
        assert b"/gespann" in refused.value.read()
    finally:
        exporter.close()


def test_a_port_in_use_is_an_error_naming_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=port)
        with pytest.raises(ExporterError, match=f"port {port} is already in use"):
            exporter.start()


def test_close_frees_the_port_at_once(serving):
    _, exporter = serving
    port = exporter.port
    exporter.close()
    again = PrometheusExporter(FedCollector(FIGURES_A), address="127.0.0.1", port=port)
    again.start()
    try:
        assert "gespann_build_info" in scrape(again.url)
    finally:
        again.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    exporter = PrometheusExporter(FedCollector(FIGURES_A), address="::1", port=0)
    try:
        exporter.start()
    except ExporterError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    try:
        assert exporter.describe() == f"prometheus http://[::1]:{exporter.port}/metrics"
        assert "gespann_build_info" in scrape(exporter.url)
    finally:
        exporter.close()


def test_describe_names_the_address():
    exporter = PrometheusExporter(FedCollector(FIGURES_A))
    assert exporter.describe() == "prometheus http://0.0.0.0:8080/metrics"


def test_original_table_is_consistent():
    names = [metric.name for metric in LEGACY_METRICS]
    assert sorted(names) == sorted(ORIGINAL_A), "every original name, once"
    for metric in LEGACY_METRICS:
        assert len({part.label_names for part in metric.parts}) == 1, metric.name
