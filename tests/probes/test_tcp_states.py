"""The tcp_states probe, as gespann loads it, counts exact transitions in a namespace of its own.

The probe is scoped to a fresh network namespace, so the host's own traffic,
including connections the test makes outside the namespace at the same time,
must not change a single count.
"""
import dataclasses

import pytest
from kernel_features import require
from loopback import CLOSE, Loopback, wait_for
from probe_flavours import FLAVOURS

from gespann.probes import AttachSettings, ProbeSet, ProbeUnavailable
from gespann.probes.examples import tcp_states
from gespann.probes.toolkit.flavours import RawTracepoint, Tracepoint

pytestmark = pytest.mark.root
CONNECTIONS = 7
HOST_CONNECTIONS = 3


def state_counts(probes: ProbeSet) -> dict[int, int]:
    counters = probes["tcp_states"].maps["state_counts"]
    return {state: sum(per_cpu) for state, per_cpu in counters.items() if sum(per_cpu)}


#: What the bpf layer reports for each perf event link.
PATHS = {"link": "bpf_link", "ioctl": "perf_event_ioctl"}


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
@pytest.mark.parametrize("btf_source", ["btf", "vendored"])
def test_counts_exactly_the_namespace_traffic(namespace, mode, perf_event_link, needed, btf_source, request):
    """With btf_source "vendored", offsets come from a table made at test time for this exact kernel."""
    require(*(feature() for feature in needed))
    if btf_source == "vendored" and mode in ("tp_btf", "fentry"):
        pytest.skip(f"n/a: {mode} attaches by BTF id, which vendored tables do not carry")
    if btf_source == "vendored":
        request.getfixturevalue("vendored_tables_of_this_kernel")
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, btf_source=btf_source,
                              netns=namespace.inode)
    with ProbeSet.attach([tcp_states.PROBE], settings) as probes:
        assert probes["tcp_states"].flavour.mode == mode
        if perf_event_link != "auto":
            assert probes["tcp_states"].path == PATHS[perf_event_link]
        with namespace.enter():
            inside = Loopback()
            inside.run(CONNECTIONS)
            inside.listener.close()
        outside = Loopback()  # the host namespace: must not be counted
        outside.run(HOST_CONNECTIONS)
        outside.listener.close()
        expected = inside.expected_counts(CONNECTIONS)
        wait_for(lambda: state_counts(probes).get(CLOSE) == expected[CLOSE])
        assert state_counts(probes) == expected


def test_unscoped_probe_sees_the_namespace_too(namespace):
    """Without a scope every namespace is watched: the namespace's traffic is a lower bound."""
    with ProbeSet.attach([tcp_states.PROBE], AttachSettings()) as probes:
        with namespace.enter():
            inside = Loopback()
            inside.run(CONNECTIONS)
            inside.listener.close()
        expected = inside.expected_counts(CONNECTIONS)
        wait_for(lambda: state_counts(probes).get(CLOSE, 0) >= expected[CLOSE])
        observed = state_counts(probes)
        assert all(observed.get(state, 0) >= n for state, n in expected.items())


def test_preferred_flavour_is_taken_first():
    with ProbeSet.attach([tcp_states.PROBE], AttachSettings()) as probes:
        assert probes["tcp_states"].flavour is tcp_states.PROBE.flavours[0]  # tp_btf: this kernel has it
        assert probes["tcp_states"].passed_over == {}


def test_falls_back_past_a_flavour_the_kernel_refuses(namespace):
    """A raw tracepoint this kernel does not have is passed over, with its reason, for the next flavour."""
    probe = dataclasses.replace(tcp_states.PROBE, flavours=(
        RawTracepoint("gespann_no_such_tracepoint", args=("sk", "oldstate", "newstate")),
        *tcp_states.PROBE.flavours,
    ))
    with ProbeSet.attach([probe], AttachSettings(netns=namespace.inode)) as probes:
        attached = probes["tcp_states"]
        assert attached.flavour is probe.flavours[1]
        assert list(attached.passed_over) == ["raw_tracepoint/gespann_no_such_tracepoint"]
        assert "gespann_no_such_tracepoint" in attached.passed_over["raw_tracepoint/gespann_no_such_tracepoint"]
        with namespace.enter():
            inside = Loopback()
            inside.run(1)
            inside.listener.close()
        wait_for(lambda: state_counts(probes).get(CLOSE) == 3)
        assert state_counts(probes) == inside.expected_counts(1)


def test_no_flavour_left_is_one_error_naming_each_reason():
    probe = dataclasses.replace(tcp_states.PROBE, flavours=(
        RawTracepoint("gespann_no_such_tracepoint", args=("sk", "oldstate", "newstate")),
        Tracepoint("gespann", "no_such_event", fields={"sk": "skaddr", "newstate": "newstate"}),
    ))
    with pytest.raises(ProbeUnavailable) as err:
        ProbeSet.attach([probe], AttachSettings())
    assert set(err.value.reasons) == {"raw_tracepoint/gespann_no_such_tracepoint", "tracepoint/gespann/no_such_event"}
    assert "gespann:no_such_event" in str(err.value)


def test_its_reader_gives_the_kernels_counts_by_state_name(namespace):
    """The complete probe: what the collector reads through its declared metric equals the map, by name."""
    from gespann.collector.collector import KernelCollector

    with ProbeSet.attach([tcp_states.PROBE], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            inside = Loopback()
            inside.run(CONNECTIONS)
            inside.listener.close()
        expected = inside.expected_counts(CONNECTIONS)
        wait_for(lambda: state_counts(probes).get(CLOSE) == expected[CLOSE])
        series = dict(collector.snapshot()["tcp_state_transitions_total"].series)
    assert series == {(("state", tcp_states.STATE_NAMES[state]),): n for state, n in expected.items()}


def test_a_probe_gespann_can_run_without_is_left_out_with_its_reasons(caplog):
    """Probe.required False: where no flavour attaches, the rest of the set attaches, and the log says why."""
    from gespann.probes import trial_attach

    absent = dataclasses.replace(tcp_states.PROBE, name="tcp_states_absent", required=False, flavours=(
        RawTracepoint("gespann_no_such_tracepoint", args=("sk", "oldstate", "newstate")),))
    with ProbeSet.attach([absent, tcp_states.PROBE], AttachSettings()) as probes:
        assert list(probes.probes) == ["tcp_states"]
    assert "probe tcp_states_absent cannot attach on this kernel" in caplog.text
    assert "gespann_no_such_tracepoint" in caplog.text and "left out" in caplog.text
    trial = trial_attach(absent, AttachSettings())
    assert trial.flavour is None and not trial.required and "gespann_no_such_tracepoint" in trial.error
