"""Repeated measurements reduced to what the report quotes: the median, with the spread beside it.

The machine has two cores and other people's tests run on it, so single
figures lie; every figure the report gives is a median over repeats, and
ratios are taken round by round (each tracer against the baseline run next to
it) before their median, so a drift of the machine's speed between rounds
cancels out.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def spread(values: Sequence[float]) -> Spread | None:
    """Median, min and max of the values that were measured (None entries are skipped)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def paired_ratios(values: Sequence[float | None], baseline: Sequence[float | None]) -> list[float]:
    """values[i] / baseline[i] for each round where both were measured."""
    return [v / b for v, b in zip(values, baseline) if v is not None and b]


def slowdown(rates: Sequence[float | None], baseline: Sequence[float | None]) -> Spread | None:
    """How much slower the workload ran with a tracer than without, as a fraction (0.03 = 3 %), round by round."""
    return spread([1 - r for r in paired_ratios(rates, baseline)])


def noise_wider_than(value: Spread | None, width: float) -> bool:
    """Whether repeated rounds spread wider than `width`: then a verdict on their median is the noise's."""
    return value is not None and value.n > 1 and value.high - value.low > width


def per_10k(cpu_s: float, connections: int) -> float:
    """CPU milliseconds per 10,000 connections."""
    return cpu_s * 1e3 * 10_000 / connections
