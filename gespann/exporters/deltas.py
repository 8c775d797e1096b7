"""Cumulative counters turned into increments, for wire formats that carry increments (DogStatsD counts)."""

from __future__ import annotations

from typing import Hashable, Union

Number = Union[int, float]


class CounterDeltas:
    """Per series, the last cumulative value the receiver got; a delta is the growth since then.

    The baseline moves only on `commit`, once the delta is known to have left: an increment that
    could not be sent is folded into the next one instead of being lost. A value below the baseline
    means the count started again from zero, so the delta is the value itself, never negative.
    """

    def __init__(self):
        self._sent: dict[Hashable, Number] = {}

    def delta(self, series: Hashable, value: Number) -> Number:
        baseline = self._sent.get(series, 0)
        return value - baseline if value >= baseline else value

    def commit(self, series: Hashable, value: Number) -> None:
        self._sent[series] = value
