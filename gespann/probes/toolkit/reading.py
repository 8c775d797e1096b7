"""How a probe's figures are read back: the reader a probe declares, and what the collector gives it.

A probe that keeps figures in its maps declares `reader`, a callable taking a
`ReadContext` and returning a `Reader`. The collector makes one reader per
attached probe that has one, and asks each for its series at every
collection; it knows no probe by name. A reader does only what its probe's
figures need; the other capabilities have defaults that do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, NamedTuple, Optional

from ...figures import ConnectionEvent, Series

if TYPE_CHECKING:
    from ..attach.probeset import AttachedProbe


@dataclass(frozen=True)
class ReadContext:
    """What a reader is made with: its probe as attached, the kernel walk attached for it, and the
    collector's settings. Nothing of other probes: a reader reads its own probe's maps (and shared ones)."""

    attached: "AttachedProbe"
    #: The kernel walk its probe offers (Probe.walk), as attached; None where user space reads instead.
    walk: Optional[object] = None
    #: The network namespace the probes watch (None: gespann's own), where sockets are looked up.
    netns_path: Optional[str] = None
    #: Seconds without traffic after which an open connection counts as idle (connections.idle_timeout).
    idle_timeout: float = 60.0
    #: Seconds without a datagram after which a UDP flow ends (connections.udp_flow_timeout).
    udp_flow_timeout: float = 120.0
    #: cgroup id -> container id, when records or container labels are wanted; None otherwise.
    container_of: Optional[Callable[[int], str]] = None
    #: Per-process labels are wanted: the reader must give `owners()`.
    by_process: bool = False

    @property
    def maps(self) -> Mapping:
        return self.attached.maps


class OwnerCounts(NamedTuple):
    """Ended connections of one owner (cgroup and comm), counted in the kernel, as read now."""

    cgroup_id: int
    comm: str
    protocol: str
    #: Ends by outcome (vocabulary.OUTCOMES).
    outcomes: Mapping[str, int]
    bytes_sent: int
    bytes_received: int
    #: The kernel's row for every owner past its map's cap.
    other: bool = False


class Reader:
    """Reads one attached probe's maps into series; the defaults are for what a probe does not do."""

    def series(self) -> Series:
        """The probe's metrics as of now, by catalogue name; read at every collection."""
        raise NotImplementedError

    def ended(self, scan: bool = True) -> list[ConnectionEvent]:
        """Connections whose end user space decides (UDP flows idle past their timeout), oldest first;
        scan=False takes only what the last `series()` found."""
        return []

    #: Ended connections whose event was dropped because nobody took them in time.
    events_dropped = 0

    def owners(self) -> Iterable[OwnerCounts]:
        """Ends counted in the kernel per owner, for per-process labels (ReadContext.by_process)."""
        return ()

    def close(self) -> None:
        """Release what the reader holds (sockets, say)."""


ReaderFactory = Callable[[ReadContext], Reader]
