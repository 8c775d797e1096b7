"""What a tracer counted of the workload, and whether that is every connection the workload made.

Each loopback connection is two TCP connections in gespann's sense (DESIGN.md):
one client, one server, each opened and closed orderly once. So N generated
connections must show as N opened and N closed per role, no resets, no
failures: anything else is a loss (or a miscount).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counts:
    opened_client: int
    opened_server: int
    closed_client: int
    closed_server: int
    resets: int
    failed: int

    def matches(self, connections: int) -> bool:
        return self.missing(connections) == 0 and self.resets == 0 and self.failed == 0

    def missing(self, connections: int) -> int:
        """Connection ends not counted (per side), out of 2 * connections."""
        return 2 * connections - min(self.opened_client + self.opened_server, self.closed_client + self.closed_server)

    def minus(self, earlier: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(vars(self).values(), vars(earlier).values())))

    def describe(self) -> str:
        return (f"opened {self.opened_client} client + {self.opened_server} server, closed {self.closed_client} + "
                f"{self.closed_server}, resets {self.resets}, failed {self.failed}")


ZERO = Counts(0, 0, 0, 0, 0, 0)
