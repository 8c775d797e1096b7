"""The one real Prometheus shared by the tests that need it: it scrapes figures A, then figures B."""

from __future__ import annotations

import dataclasses

import pytest
from exporter_figures import FIGURES_A, FIGURES_B, NO_LABELS, ORIGINAL_A, FedCollector, catalogue_samples
from prometheus_server import BINARY, SKIP_REASON, Prometheus, free_port

from gespann.exporters import DogStatsdExporter, PrometheusExporter


@dataclasses.dataclass
class Scraped:
    prometheus: Prometheus
    at_a: dict  # name -> vector, queried while gespann showed figures A
    datadog: DogStatsdExporter  # pointed at a closed port: its unsent count is exposed as a self-metric
    unsent_at_a: int


#: Every family gespann exposes from figures, as Prometheus stores them.
SCRAPED_NAMES = (*ORIGINAL_A, *catalogue_samples(FIGURES_A), "gespann_datadog_unsent_total")


@pytest.fixture(scope="session")
def scraped(tmp_path_factory) -> Scraped:
    if BINARY is None:
        pytest.skip(SKIP_REASON)
    collector = FedCollector(FIGURES_A)
    datadog = DogStatsdExporter(collector, host="127.0.0.1", port=free_port(), interval=3600)
    datadog.flush()
    exporter = PrometheusExporter(collector, address="127.0.0.1", port=0, self_metric_sources=[datadog])
    exporter.start()
    prometheus = Prometheus(f"127.0.0.1:{exporter.port}", exporter.path, tmp_path_factory.mktemp("prometheus"))
    try:
        prometheus.wait_for(lambda: prometheus.vector("gespann_build_info"), "the first scrape")
        at_a = {name: prometheus.vector(name) for name in SCRAPED_NAMES}
        unsent_at_a = datadog.unsent()
        collector.change_to(FIGURES_B)
        datadog.flush()
        prometheus.wait_for(lambda: prometheus.vector("gespann_total_connections") == {NO_LABELS: 25},
                            "a scrape of figures B")
        yield Scraped(prometheus, at_a, datadog, unsent_at_a)
    finally:
        prometheus.stop()
        exporter.close()
        datadog.close()
