"""The words gespann's figures are made of, defined once for the probes, the collector and the exporters.

The kernel stores most of these as small indices (a role is 0 or 1 in a
connection's entry, a direction indexes a counter slot), so the order of
each tuple is part of the contract between a probe that writes the index and
the reader that names it. Label values are bounded by these sets; the only
open-ended ones are a failure's errno name and the opt-in process labels.
"""

from __future__ import annotations

PROTOCOLS = ("tcp", "udp")
#: The label value of everything past a cap (a map that is full, labels.max_series): counted, under one name.
OTHER = "other"

#: A connection's side: the one that opened it (TCP's connect, UDP's first datagram) or the other.
ROLES = ("client", "server")
CLIENT, SERVER = range(len(ROLES))

#: Bytes and datagrams; also who sent a reset.
DIRECTIONS = ("sent", "received")
SENT, RECEIVED = range(len(DIRECTIONS))
RESET_DIRECTIONS = DIRECTIONS

#: How a connection ended.
OUTCOMES = ("close", "reset", "failed")
CLOSE, RESET, FAILED = range(len(OUTCOMES))

#: Failed opens with a name of their own, each counted in a slot of the kernel's row. Any other errno
#: is reported by its errno name (e.g. "EACCES"), and a connect abandoned before any answer (no errno:
#: close() on a connecting socket) as ABORTED.
FAILURE_REASONS = ("refused", "timeout", "host_unreachable", "network_unreachable")
ABORTED = "aborted"

#: Histogram buckets, shared by every duration and latency: powers of two microseconds from
#: 2^0 to 2^36 (about 19 hours), then +Inf.
BUCKET_BOUNDS_US = tuple(1 << i for i in range(37))
BOUNDS_SECONDS = tuple(bound * 1e-6 for bound in BUCKET_BOUNDS_US)
BOUNDS_NS = tuple(bound * 1000 for bound in BUCKET_BOUNDS_US)


def name_of(names: tuple[str, ...], index: int, what: str) -> str:
    """The name a kernel index stands for; an index the tuple lacks (a newer probe) still gets a name."""
    return names[index] if 0 <= index < len(names) else f"{what}{index}"
