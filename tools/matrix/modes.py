"""The matrix's modes: which tests speak for which way of attaching or reading.

A mode is one row of the table (the brief calls them columns; kernels run
across, modes down, because modes are the list that keeps growing). A test
belongs to every mode one of whose patterns is a substring of its id, e.g.
`tests.probes.test_tcp_states::test_counts_exactly_the_namespace_traffic[vendored-tracepoint-bpf_link]`
counts for both "tracepoint/link" and "offsets/vendored BTF".
A mode's patterns name the tests that use the mode, not those that check how
its absence is reported: those pass on every kernel and would make an
unavailable mode look available. Tests no mode claims are gathered under
OTHER, so a failure anywhere in the kernel-facing suite shows in the table.
Adding a mode is one line in MODES.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Callable, TypeVar


class Mode:
    """A row of the matrix: the tests whose id contains any of `patterns`."""

    def __init__(self, name: str, *patterns: str):
        if not patterns:
            raise ValueError(f"mode {name!r} needs at least one pattern")
        self.name, self.patterns = name, patterns

    def claims(self, test_id: str) -> bool:
        return any(pattern in test_id for pattern in self.patterns)

    def __repr__(self) -> str:
        return f"Mode({self.name!r}, {', '.join(map(repr, self.patterns))})"


MODES: tuple[Mode, ...] = (
    Mode("tracepoint/link", "[AttachMode.LINK]", "-tracepoint-bpf_link]"),
    Mode("tracepoint/perf_ioctl", "[AttachMode.PERF_IOCTL]", "-tracepoint-perf_event_ioctl]"),
    Mode("raw_tracepoint", "::test_raw_tracepoint_", "-raw_tracepoint_open]"),
    Mode("tp_btf", "test_attach_tp_btf::test_tp_btf_", "-tp_btf]"),
    Mode("fentry/fexit", "test_attach_fentry::test_fentry_", "test_attach_fentry::test_fexit_", "-fentry]"),
    Mode("kprobe/pmu", "[pmu-", "[pmu]"),
    Mode("kprobe/tracefs", "[tracefs-", "[tracefs]"),
    Mode("reader/ringbuf", "test_readers::test_channel_delivers_exact_records[ringbuf]",
         "test_readers::test_ring_buffer_"),
    Mode("reader/perf", "test_readers::test_channel_delivers_exact_records[perf]",
         "test_readers::test_perf_buffer_"),
    Mode("offsets/kernel BTF", "[btf-"),
    Mode("offsets/vendored BTF", "[vendored-"),
    # `gespann check --json` against what attaching each probe in each mode does on the kernel.
    Mode("gespann check", "tests.cli.test_check::"),
)

#: The row of every kernel-facing test that no mode claims.
OTHER = "other root tests"

T = TypeVar("T")


def rows(modes: Sequence[Mode] = MODES) -> list[str]:
    """The names of the matrix's rows, in order: each mode, then OTHER."""
    names = [mode.name for mode in modes]
    if len(set(names)) != len(names) or OTHER in names:
        raise ValueError(f"mode names must be unique and not {OTHER!r}: {names}")
    return [*names, OTHER]


def group(items: Iterable[T], test_id: Callable[[T], str], modes: Sequence[Mode] = MODES) -> Mapping[str, list[T]]:
    """`items` (tests, or their results) by row; a test in no mode goes to OTHER."""
    grouped: dict[str, list[T]] = {name: [] for name in rows(modes)}
    for item in items:
        claimed = [mode.name for mode in modes if mode.claims(test_id(item))]
        for name in claimed or [OTHER]:
            grouped[name].append(item)
    return grouped
