"""DogStatsD as a real UDP socket receives it: names, types, increments, tags, and an agent that is not there."""

from __future__ import annotations

import time

import pytest
from dogstatsd_agent import FakeAgent, Line
from exporter_figures import FIGURES_A, FIGURES_B, FedCollector, snapshot
from prometheus_server import free_port

from gespann.collector import CATALOGUE, Histogram, Metric, Snapshot, labels
from gespann.exporters import DogStatsdExporter
from gespann.exporters.datadog import MAX_PAYLOAD
from gespann.figures import counter


@pytest.fixture(autouse=True)
def no_datadog_environment(monkeypatch):
    """DD_ENV and friends would add tags of the machine running the tests."""
    for variable in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DATADOG_TAGS", "DD_DOGSTATSD_DISABLE", "DD_ENTITY_ID"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def agent():
    listening = FakeAgent()
    yield listening
    listening.close()


def exporter_for(agent: FakeAgent, collector: FedCollector, **settings) -> DogStatsdExporter:
    return DogStatsdExporter(collector, host="127.0.0.1", port=agent.port, interval=3600, **settings)


def keyed(lines: list[Line]) -> dict[tuple, Line]:
    found = {(line.name, frozenset(line.tags)): line for line in lines}
    assert len(found) == len(lines), "one line per series and flush"
    return found


def line_count(figures) -> int:
    """Lines one flush sends: one per gauge or counter series, 2 + one per finite bound per histogram series."""
    return sum(2 + len(value.bounds) if isinstance(value, Histogram) else 1
               for metric in figures.metrics.values() for value in metric.series.values())


def value(lines: dict, name: str, *tags: str) -> float:
    return lines[(name, frozenset(tags))].value


def test_first_flush_sends_gauges_and_counts_since_start(agent):
    exporter = exporter_for(agent, FedCollector(FIGURES_A))
    exporter.flush()
    lines = keyed(agent.lines())
    assert len(lines) == line_count(FIGURES_A)
    assert lines[("gespann.connections.open", frozenset({"protocol:tcp"}))] == Line(
        "gespann.connections.open", 3, "g", ("protocol:tcp",))
    assert value(lines, "gespann.connections.opened", "protocol:tcp", "role:client") == 10
    assert lines[("gespann.connections.opened", frozenset({"protocol:tcp", "role:client"}))].type == "c"
    assert value(lines, "gespann.connections.failed", "reason:refused") == 2
    assert value(lines, "gespann.bytes", "protocol:tcp", "direction:received") == 5000
    assert value(lines, "gespann.tcp.retransmits") == 2
    assert value(lines, "gespann.probe_info", "probe:tcp_send_reset", "mode:kprobe") == 1
    assert value(lines, "gespann.build_info", "version:0.1.0") == 1


def test_histograms_are_sent_as_openmetrics_style_counts(agent):
    exporter = exporter_for(agent, FedCollector(FIGURES_A))
    exporter.flush()
    lines = keyed(agent.lines())
    rtt = {name: line for (name, _), line in lines.items() if name.startswith("gespann.tcp.rtt_seconds")}
    assert {line.type for line in rtt.values()} == {"c"}, "counts only: no invented distribution samples"
    assert value(lines, "gespann.tcp.rtt_seconds.count") == 4
    assert value(lines, "gespann.tcp.rtt_seconds.sum") == 0.0078125
    assert value(lines, "gespann.tcp.rtt_seconds.bucket", "upper_bound:0.0001") == 1
    assert value(lines, "gespann.tcp.rtt_seconds.bucket", "upper_bound:0.001") == 3
    assert value(lines, "gespann.tcp.rtt_seconds.bucket", "upper_bound:0.01") == 4
    assert not [key for key in lines if "upper_bound:inf" in key[1]], "+Inf is .count"
    assert value(lines, "gespann.connections.duration_seconds.count", "protocol:udp") == 1
    assert value(lines, "gespann.connections.duration_seconds.bucket", "protocol:tcp", "upper_bound:1.0") == 3


def test_later_flushes_send_increments(agent):
    collector = FedCollector(FIGURES_A)
    exporter = exporter_for(agent, collector)
    exporter.flush()
    agent.lines()
    collector.change_to(FIGURES_B)
    exporter.flush()
    lines = keyed(agent.lines())
    assert value(lines, "gespann.connections.opened", "protocol:tcp", "role:client") == 3
    assert value(lines, "gespann.connections.opened", "protocol:tcp", "role:server") == 0
    assert value(lines, "gespann.connections.failed", "reason:eacces") == 1, "a new series: all of it, lowercase"
    assert value(lines, "gespann.bytes", "protocol:udp", "direction:received") == 60
    assert value(lines, "gespann.records_lost", "reader:ringbuf") == 2
    assert value(lines, "gespann.connections.open", "protocol:tcp") == 2, "a gauge is its value, not a change"
    assert value(lines, "gespann.tcp.rtt_seconds.count") == 4
    assert value(lines, "gespann.tcp.rtt_seconds.sum") == 0.0234375
    assert value(lines, "gespann.tcp.rtt_seconds.bucket", "upper_bound:0.01") == 3
    assert value(lines, "gespann.connections.duration_seconds.sum", "protocol:tcp") == 12.0

    exporter.flush()
    unchanged = keyed(agent.lines())
    counts = [line.value for line in unchanged.values() if line.type == "c"]
    assert counts and set(counts) == {0}


def test_a_counter_that_starts_again_never_sends_a_negative_increment(agent):
    collector = FedCollector(snapshot(0.0, retransmits_total={(): 50}))
    exporter = exporter_for(agent, collector)
    exporter.flush()
    collector.change_to(snapshot(1.0, retransmits_total={(): 7}))
    exporter.flush()
    assert [line.value for line in agent.lines()] == [50, 7]


def test_prefix_and_configured_tags(agent):
    exporter = exporter_for(agent, FedCollector(snapshot(0.0, connections_open={labels(protocol="TCP"): 3})),
                            prefix="netobs", tags=["Env:Prod", "team:net"])
    exporter.flush()
    assert agent.lines() == [Line("netobs.connections.open", 3, "g", ("protocol:tcp", "env:prod", "team:net"))]


def test_empty_label_values_are_left_out(agent):
    exporter = exporter_for(agent, FedCollector(snapshot(0.0, connections_failed_total={labels(reason=""): 1})))
    exporter.flush()
    assert agent.lines() == [Line("gespann.connections.failed", 1, "c", ())]


def test_every_catalogue_metric_has_its_own_datadog_name():
    names = [spec.dogstatsd for spec in CATALOGUE]
    assert all(names) and len(set(names)) == len(names)
    assert all(not name.endswith("_total") for name in names)


def test_datadog_names_come_from_the_catalogue(agent):
    """A metric the exporter has never heard of goes out under the name its spec declares."""
    spec = counter("widgets_seen_total", ("colour",), "Widgets.", dogstatsd="toy.widgets")
    exporter = exporter_for(agent, FedCollector(Snapshot(0.0, {spec.name: Metric.of(spec, {labels(colour="red"): 4})})))
    exporter.flush()
    assert agent.lines() == [Line("gespann.toy.widgets", 4, "c", ("colour:red",))]


def test_datagrams_stay_within_one_udp_payload(agent):
    many = snapshot(0.0, connections_opened_total={
        labels(protocol="tcp", role="client", comm=f"process-{n:03d}"): n for n in range(200)})
    exporter = exporter_for(agent, FedCollector(many))
    exporter.flush()
    assert len(agent.lines()) == 200
    assert len(agent.datagrams) > 1
    assert max(len(datagram) for datagram in agent.datagrams) <= MAX_PAYLOAD


def test_flushes_on_its_own_and_once_more_on_close(agent):
    collector = FedCollector(snapshot(0.0, retransmits_total={(): 1}))
    exporter = DogStatsdExporter(collector, host="127.0.0.1", port=agent.port, interval=0.05)
    exporter.start()
    first = agent.lines(quiet=0.02)[0]
    assert first == Line("gespann.tcp.retransmits", 1, "c", ())
    collector.change_to(snapshot(1.0, retransmits_total={(): 4}))
    exporter.close()
    received = agent.lines(quiet=0.1)
    assert sum(line.value for line in received) == 3, "every increment exactly once, the last one by close()"


def test_agent_down_counts_every_unsent_line():
    port = free_port()  # nothing listens there: every datagram draws a port-unreachable
    exporter = DogStatsdExporter(FedCollector(FIGURES_A), host="127.0.0.1", port=port, interval=3600)
    exporter.flush()
    exporter.flush()
    assert exporter.unsent() == 2 * line_count(FIGURES_A)
    assert list(exporter.self_metrics())[0].series == {(): 2 * line_count(FIGURES_A)}


def test_keeps_flushing_while_the_agent_is_down_and_catches_up_when_it_is_back():
    port = free_port()
    collector = FedCollector(FIGURES_A)
    exporter = DogStatsdExporter(collector, host="127.0.0.1", port=port, interval=0.02)
    exporter.start()
    try:
        deadline = time.monotonic() + 5
        while exporter.unsent() < 3 * line_count(FIGURES_A):
            assert time.monotonic() < deadline, "the flush thread stopped after a failure"
            time.sleep(0.01)
        back = FakeAgent(port)
        collector.change_to(FIGURES_B)
        time.sleep(0.1)
    finally:
        exporter.close()
    received = back.lines(quiet=0.1)
    back.close()
    opened = [line.value for line in received
              if line.name == "gespann.connections.opened" and set(line.tags) == {"protocol:tcp", "role:client"}]
    assert sum(opened) == 13, "what could not be sent is sent later: the increments add up to the count"
    assert all(increment >= 0 for increment in opened)


def test_unresolvable_agent_host_counts_every_unsent_line():
    exporter = DogStatsdExporter(FedCollector(FIGURES_A), host="gespann-agent.invalid", port=8125, interval=3600)
    exporter.flush()
    exporter.flush()
    assert exporter.unsent() == 2 * line_count(FIGURES_A)


def test_describe():
    exporter = DogStatsdExporter(FedCollector(FIGURES_A), host="agent", port=8125, interval=10)
    assert exporter.describe() == "datadog dogstatsd agent:8125 every 10s as gespann.*"


@pytest.mark.root
def test_per_peer_series_go_out_with_the_same_labels_as_tags_under_the_same_cap(agent, namespace):
    """Real per-peer counts (limits.tcp_peers 1): the one peer that fits under its own tags, the rest under
    other; what Prometheus would show, series for series."""
    import socket

    from loopback import wait_for

    from gespann.collector.collector import KernelCollector
    from gespann.probes import AttachSettings, ProbeSet
    from gespann.probes.tcp import lifecycle

    settings = AttachSettings(netns=namespace.inode, peers=True, capacities={"tcp_peers": 1})
    with ProbeSet.attach((lifecycle.PROBE,), settings) as probes, KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
            for listener in listeners:
                socket.create_connection(listener.getsockname()).close()
                listener.accept()[0].close()
                listener.close()
        wait_for(lambda: collector.snapshot()["peer_connections_closed_total"].total() == 4)
        exporter = DogStatsdExporter(collector, host="127.0.0.1", port=agent.port, interval=3600)
        exporter.flush()
        snapshot = collector.snapshot()
    sent = {frozenset(line.tags): line.value for line in agent.lines()
            if line.name == "gespann.peer.connections.opened" and line.value}
    shown = {frozenset(f"{name}:{value}" for name, value in key if value): n
             for key, n in snapshot["peer_connections_opened_total"].series.items() if n}
    assert sent == shown and sum(sent.values()) == 4
    assert {"role:client", "peer_address:other"} in [set(tags) for tags in sent] or \
        {"role:server", "local_port:other"} in [set(tags) for tags in sent]
    assert len(sent) == 3  # the one peer that fits, and the two roles' other rows
