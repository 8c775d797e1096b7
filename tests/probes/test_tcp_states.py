"""The tcp_states probe, as gespann loads it, counts exact transitions in a namespace of its own.

The probe is scoped to a fresh network namespace, so the host's own traffic,
including connections the test makes outside the namespace at the same time,
must not change a single count.
"""
import pytest
from loopback import CLOSE, Loopback, wait_for
from namespaces import Namespace

from gespann.probes import ProbeSet, tcp_states

pytestmark = pytest.mark.root
CONNECTIONS = 7
HOST_CONNECTIONS = 3


@pytest.fixture
def namespace():
    ns = Namespace()
    yield ns
    ns.remove()


def state_counts(probes: ProbeSet) -> dict[int, int]:
    counters = probes["tcp_states"].maps["state_counts"]
    return {state: sum(per_cpu) for state, per_cpu in counters.items() if sum(per_cpu)}


@pytest.mark.parametrize("attach", ["link", "ioctl"])
@pytest.mark.parametrize("btf_source", ["btf", "vendored"])
def test_counts_exactly_the_namespace_traffic(namespace, attach, btf_source):
    with ProbeSet.attach([tcp_states.PROBE], attach, btf_source, netns=namespace.inode) as probes:
        assert probes["tcp_states"].link.mode.value == {"link": "bpf_link", "ioctl": "perf_event_ioctl"}[attach]
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
    with ProbeSet.attach([tcp_states.PROBE]) as probes:
        with namespace.enter():
            inside = Loopback()
            inside.run(CONNECTIONS)
            inside.listener.close()
        expected = inside.expected_counts(CONNECTIONS)
        wait_for(lambda: state_counts(probes).get(CLOSE, 0) >= expected[CLOSE])
        observed = state_counts(probes)
        assert all(observed.get(state, 0) >= n for state, n in expected.items())
