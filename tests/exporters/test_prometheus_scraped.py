"""What a real Prometheus stores from gespann: every name, exact values, counters that never go down."""

from __future__ import annotations

import pytest
from exporter_figures import (
    FIGURES_A,
    FIGURES_B,
    NO_LABELS,
    ORIGINAL_A,
    ORIGINAL_B,
    ORIGINAL_COUNTERS,
    catalogue_samples,
)

from gespann.collector import CATALOGUE, Kind

CATALOGUE_COUNTERS = sorted(
    [f"gespann_{spec.name}" for spec in CATALOGUE if spec.kind is Kind.COUNTER]
    + [f"gespann_{spec.name}_{part}" for spec in CATALOGUE if spec.kind is Kind.HISTOGRAM
       for part in ("bucket", "sum", "count")])


@pytest.mark.parametrize("name", sorted(ORIGINAL_A))
def test_original_name_exact_before_the_change(scraped, name):
    assert scraped.at_a[name] == ORIGINAL_A[name]


@pytest.mark.parametrize("name", sorted(ORIGINAL_B))
def test_original_name_exact_after_the_change(scraped, name):
    assert scraped.prometheus.vector(name) == ORIGINAL_B[name]


def test_every_catalogue_metric_exact_before_the_change(scraped):
    expected = catalogue_samples(FIGURES_A)
    assert {name: scraped.at_a[name] for name in expected} == expected


def test_every_catalogue_metric_exact_after_the_change(scraped):
    expected = catalogue_samples(FIGURES_B)
    assert {name: scraped.prometheus.vector(name) for name in expected} == expected
    assert {spec.name for spec in CATALOGUE} == set(FIGURES_B.metrics), "the figures cover the whole catalogue"


@pytest.mark.parametrize("name", ORIGINAL_COUNTERS + CATALOGUE_COUNTERS)
def test_counter_never_goes_down_across_the_change(scraped, name):
    assert set(scraped.prometheus.vector(f"resets({name}[5m])").values()) == {0}
    for series, values in scraped.prometheus.matrix(f"{name}[5m]").items():
        assert values == sorted(values), series
        assert values[0] == scraped.at_a[name].get(series, values[0]), series


def test_averages_are_true_means_since_start(scraped):
    prometheus = scraped.prometheus
    rtt_mean = prometheus.vector("gespann_rtt_seconds_sum / gespann_rtt_seconds_count * 1e6")
    duration_mean = prometheus.vector(
        "sum(gespann_connection_duration_seconds_sum) / sum(gespann_connection_duration_seconds_count) * 1e3")
    assert prometheus.vector("gespann_avg_rtt_microseconds") == rtt_mean == {NO_LABELS: 3906.25}
    assert prometheus.vector("gespann_avg_connection_duration_ms") == duration_mean == {NO_LABELS: 2500.0}


def test_total_connections_keeps_its_exact_name_as_an_untyped_family(scraped):
    metadata = scraped.prometheus.metadata("gespann_total_connections")
    assert [entry["type"] for entry in metadata] == ["unknown"]
    assert scraped.prometheus.vector("gespann_total_connections_total") == {}
    assert scraped.prometheus.vector("gespann_connections_opened_total") != {}


def test_datadog_unsent_count_is_exposed(scraped):
    assert 0 < scraped.unsent_at_a < scraped.datadog.unsent()
    assert scraped.at_a["gespann_datadog_unsent_total"] == {NO_LABELS: scraped.unsent_at_a}
    assert scraped.prometheus.vector("gespann_datadog_unsent_total") == {NO_LABELS: scraped.datadog.unsent()}
