"""Which tests speak for which mode, and that each mode still names tests that exist."""
import subprocess
import sys
from pathlib import Path

import pytest
from matrix.modes import MODES, OTHER, Mode, group, rows

REPO = Path(__file__).resolve().parents[2]


def test_a_test_belongs_to_each_mode_that_claims_it_and_to_other_only_if_none_does():
    modes = (Mode("link", "[LINK]"), Mode("reader", "test_reader", "[ring]"))
    ids = ["m::test_attach[LINK]", "m::test_reader[ring]", "m::test_reader_link[LINK]", "m::test_maps"]
    assert group(ids, str, modes) == {
        "link": ["m::test_attach[LINK]", "m::test_reader_link[LINK]"],
        "reader": ["m::test_reader[ring]", "m::test_reader_link[LINK]"],
        OTHER: ["m::test_maps"],
    }


@pytest.mark.parametrize("test_id, expected", [
    ("tests.bpf.test_tracepoints::test_counts_every_transition_of_the_test_port[AttachMode.LINK]",
     ["tracepoint/link"]),
    ("tests.probes.test_tcp_states::test_counts_exactly_the_namespace_traffic[vendored-tracepoint-bpf_link]",
     ["tracepoint/link", "offsets/vendored BTF"]),
    ("tests.probes.test_tcp_states::test_counts_exactly_the_namespace_traffic[btf-raw_tracepoint_open]",
     ["raw_tracepoint", "offsets/kernel BTF"]),
    ("tests.bpf.test_attach_fentry::test_fentry_counts_tcp_connect[raw_tracepoint_open]", ["fentry/fexit"]),
    ("tests.bpf.test_attach_fentry::test_fexit_counts_inet_csk_accept[bpf_link]", ["fentry/fexit"]),
    ("tests.bpf.test_attach_fentry::test_unavailable_fentry_is_reported_as_unsupported", [OTHER]),
    ("tests.bpf.test_attach_tp_btf::test_tp_btf_counts_every_transition[bpf_link]", ["tp_btf"]),
    ("tests.bpf.test_attach_kprobe::test_kprobe_counts_tcp_connect[pmu-bpf_link]", ["kprobe/pmu"]),
    ("tests.bpf.test_attach_kprobe::test_kprobe_on_an_unknown_function_names_it[tracefs]", ["kprobe/tracefs"]),
    ("tests.bpf.test_readers::test_ring_buffer_skips_discarded_records", ["reader/ringbuf"]),
    ("tests.bpf.test_readers::test_channel_delivers_exact_records[perf]", ["reader/perf"]),
    ("tests.bpf.test_maps::test_ring_buffer_size_must_be_a_power_of_two_pages", [OTHER]),
    ("tests.cli.test_check::test_reported_features_match_what_attaches", ["gespann check"]),
])
def test_the_suite_s_ids_land_in_the_rows_they_speak_for(test_id, expected):
    assert [row for row, ids in group([test_id], str).items() if ids] == expected


def test_every_row_is_present_even_without_tests():
    assert group([], str, (Mode("a", "x"),)) == {"a": [], OTHER: []}
    assert rows((Mode("a", "x"), Mode("b", "y"))) == ["a", "b", OTHER]


@pytest.mark.parametrize("names", [("a", "a"), ("a", OTHER)])
def test_row_names_are_unique(names):
    with pytest.raises(ValueError, match="unique"):
        rows(tuple(Mode(name, "x") for name in names))


def test_a_mode_needs_a_pattern():
    with pytest.raises(ValueError, match="pattern"):
        Mode("empty")


def test_every_mode_claims_a_test_of_the_kernel_facing_suite():
    """A renamed test would otherwise leave its mode's row empty on every kernel, silently."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-m", "root", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = [junit_id(line) for line in collected.stdout.splitlines() if "::" in line]
    unclaimed = [mode.name for mode in MODES if not any(mode.claims(test_id) for test_id in ids)]
    assert unclaimed == []


def junit_id(node_id: str) -> str:
    """tests/bpf/test_x.py::TestY::test_z[p] -> tests.bpf.test_x.TestY::test_z[p], as junit.parse names it."""
    path, *scopes, name = node_id.split("::")
    return f"{'.'.join([path.removesuffix('.py').replace('/', '.'), *scopes])}::{name}"


def test_junit_id():
    assert junit_id("tests/bpf/test_x.py::TestY::test_z[a/b.c]") == "tests.bpf.test_x.TestY::test_z[a/b.c]"
