"""The text format gespann writes, read back by prometheus-client's parser (an oracle gespann did not write)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gespann.collector import Histogram, Kind, labels
from gespann.exporters.exposition import OPENMETRICS, TEXT, Family, go_float, negotiate, render


def parsed(*families: Family) -> dict:
    return {family.name: family for family in text_string_to_metric_families(render(families).decode())}


#: Help texts are gespann's own: any printable text with newlines and backslashes, not starting or ending
#: in whitespace (a parser may trim the line).
HELP_TEXTS = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")) | st.sampled_from("\\\n "),
                     max_size=40).map(lambda text: f"h {text} h")


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), HELP_TEXTS)
def test_any_label_value_and_help_text_read_back_unchanged(value, help_text):
    family = parsed(Family("gespann_x", Kind.GAUGE, help_text, {labels(comm=value): 3}))["gespann_x"]
    assert family.documentation == help_text
    assert [(s.labels, s.value) for s in family.samples] == [({"comm": value}, 3.0)]


def test_a_counter_is_written_with_total_and_typed_counter():
    page = render([Family("gespann_opened", Kind.COUNTER, "h", {(): 2}),
                   Family("gespann_closed_total", Kind.COUNTER, "h", {(): 1})]).decode()
    assert "# TYPE gespann_opened_total counter\ngespann_opened_total 2.0\n" in page
    assert "# TYPE gespann_closed_total counter\ngespann_closed_total 1.0\n" in page


def test_declared_labels_a_series_lacks_are_written_empty_and_extra_ones_pass_through():
    page = render([Family("m", Kind.GAUGE, "h", {labels(protocol="tcp", comm="curl"): 1},
                          label_names=("protocol", "role"))]).decode()
    assert 'm{comm="curl",protocol="tcp",role=""} 1.0' in page


def test_a_histogram_reads_back_with_cumulative_buckets_count_and_sum():
    histogram = Histogram(bounds=(0.001, 0.01), counts=(2, 0, 1), sum=0.5)
    family = parsed(Family("gespann_rtt_seconds", Kind.HISTOGRAM, "h", {labels(protocol="tcp"): histogram}))
    samples = {(s.name, s.labels.get("le")): s.value for s in family["gespann_rtt_seconds"].samples}
    assert samples == {("gespann_rtt_seconds_bucket", "0.001"): 2, ("gespann_rtt_seconds_bucket", "0.01"): 2,
                       ("gespann_rtt_seconds_bucket", "+Inf"): 3, ("gespann_rtt_seconds_count", None): 3,
                       ("gespann_rtt_seconds_sum", None): 0.5}


@pytest.mark.parametrize("number, text", [
    (0, "0.0"), (1, "1.0"), (0.005, "0.005"), (2.5, "2.5"), (123456.0, "123456.0"), (1234567, "1.234567e+06"),
    (7930070, "7.93007e+06"), (1e7, "1e+07"), (12345678901, "1.2345678901e+10"), (-5, "-5.0"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_numbers_are_written_as_go_writes_a_float64(number, text):
    assert go_float(number) == text


@given(st.floats(allow_nan=False))
def test_every_number_reads_back_exactly(number):
    assert float(go_float(number).replace("Inf", "inf")) == number


# OpenMetrics 1.0.0, read back by prometheus-client's OpenMetrics parser.

def parsed_openmetrics(*families: Family) -> dict:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    return {family.name: family for family in openmetrics_families(render(families, OPENMETRICS).decode())}


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), HELP_TEXTS)
def test_openmetrics_reads_back_any_label_value_and_help_text(value, help_text):
    family = parsed_openmetrics(Family("gespann_x", Kind.GAUGE, help_text, {labels(comm=value): 3}))["gespann_x"]
    assert family.documentation == help_text
    assert [(s.labels, s.value) for s in family.samples] == [({"comm": value}, 3.0)]


def test_openmetrics_names_a_counter_without_total_its_units_and_ends_with_eof():
    histogram = Histogram(bounds=(0.001, 0.01), counts=(2, 0, 1), sum=0.5)
    families = [Family("gespann_records_lost_total", Kind.COUNTER, "h", {labels(reader="ringbuf"): 2}),
                Family("gespann_process_bytes_total", Kind.COUNTER, "h", {(): 7}),
                Family("gespann_rtt_seconds", Kind.HISTOGRAM, "h", {labels(protocol="tcp"): histogram}),
                Family("gespann_total_connections", "untyped", "h", {(): 4})]
    page = render(families, OPENMETRICS).decode()
    assert page.endswith("\n# EOF\n") and page.count("# EOF") == 1
    assert "# TYPE gespann_records_lost counter\ngespann_records_lost_total{reader=\"ringbuf\"} 2.0\n" in page
    read = parsed_openmetrics(*families)
    assert {name: (family.type, family.unit) for name, family in read.items()} == {
        "gespann_records_lost": ("counter", ""), "gespann_process_bytes": ("counter", "bytes"),
        "gespann_rtt_seconds": ("histogram", "seconds"), "gespann_total_connections": ("unknown", "")}
    assert [s.name for s in read["gespann_process_bytes"].samples] == ["gespann_process_bytes_total"]
    assert [(s.labels.get("le"), s.value) for s in read["gespann_rtt_seconds"].samples][:3] == [
        ("0.001", 2), ("0.01", 2), ("+Inf", 3)]


@pytest.mark.parametrize("accept, expected", [
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OPENMETRICS),  # Prometheus 2
    ("application/openmetrics-text", OPENMETRICS),
    ("text/plain;q=0.5, Application/OpenMetrics-Text; version=\"1.0.0\"", OPENMETRICS),
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,"
     "application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OPENMETRICS),  # Prometheus 2 with native histograms
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,"
     "text/plain;version=0.0.4;q=0.3", TEXT),  # protobuf, else text
    ("application/openmetrics-text;version=0.0.1", TEXT), ("application/openmetrics-text;q=0", TEXT),
    ("", TEXT), ("*/*", TEXT), ("text/html", TEXT),
])
def test_the_format_is_negotiated_from_accept_as_prometheus_client_does(accept, expected):
    assert negotiate(accept) is expected
