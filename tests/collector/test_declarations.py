"""A reader's series are held against what its probe declares: a drift is an error, never a silent drop."""
import dataclasses

import pytest

from gespann.collector.declarations import DeclaredSeries
from gespann.figures import UndeclaredSeries, counter, labels
from gespann.probes.authoring import R0, BuildTarget, Probe, Program, socket_state

SENT = counter("example_sent_bytes_total", ("role",), "Bytes sent, by role.", unit="bytes")
OTHER_SPEC = counter("example_sent_bytes_total", ("direction",), "The same name, other labels.", unit="bytes")


def _body(p: Program, args, target: BuildTarget) -> None:
    p.mov(R0, 0)
    p.exit()


PROBE = Probe(name="example", summary="a probe that declares one metric", flavours=socket_state.FLAVOURS,
              body=_body, metrics=(SENT,), reader=lambda context: None)


def test_declared_series_pass_through_by_name():
    declared = DeclaredSeries(PROBE)
    series = {SENT: {labels(role="client"): 3}}
    assert declared.check(series) == {"example_sent_bytes_total": {labels(role="client"): 3}}
    assert declared.check({"example_sent_bytes_total": {labels(role="server"): 1}}) == {
        "example_sent_bytes_total": {labels(role="server"): 1}}


def test_a_misspelled_metric_fails_loudly_naming_the_probe_and_what_it_declares():
    with pytest.raises(UndeclaredSeries, match=r"probe example returned metric 'example_sent_byte_total', which it "
                                               r"does not declare \(it declares example_sent_bytes_total\)"):
        DeclaredSeries(PROBE).check({"example_sent_byte_total": {labels(role="client"): 3}})


def test_a_spec_of_the_same_name_but_not_declared_fails():
    with pytest.raises(UndeclaredSeries, match="does not declare"):
        DeclaredSeries(PROBE).check({OTHER_SPEC: {labels(direction="sent"): 3}})


@pytest.mark.parametrize("label_set", [labels(role="client", host="a"), labels(direction="sent"), ()])
def test_an_undeclared_or_missing_label_fails_loudly(label_set):
    with pytest.raises(UndeclaredSeries, match=r"probe example returned metric example_sent_bytes_total with labels "
                                               r".* it declares \('role',\)"):
        DeclaredSeries(PROBE).check({SENT: {label_set: 1}})


def test_a_spec_makes_only_declared_label_sets():
    assert SENT.series(role="client") == labels(role="client")
    with pytest.raises(UndeclaredSeries, match=r"declares labels \('role',\), not \('direction',\)"):
        SENT.series(direction="sent")


@pytest.mark.root
def test_the_collector_refuses_a_reader_that_drifts_from_its_probe(namespace):
    """End to end: a real probe attached, its reader returning a label its metric does not declare."""
    from gespann.collector.collector import KernelCollector
    from gespann.probes import AttachSettings, ProbeSet
    from gespann.probes.examples import tcp_states

    class Drifting(tcp_states.StateCounts):
        def series(self):
            return {tcp_states.TRANSITIONS: {labels(state="close", protocol="tcp"): 1}}

    probe = dataclasses.replace(tcp_states.PROBE, reader=Drifting)
    with ProbeSet.attach([probe], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with pytest.raises(UndeclaredSeries, match="probe tcp_states returned metric tcp_state_transitions_total "
                                                   "with labels"):
            collector.snapshot()
