"""A fixed-size latency histogram: percentiles without memory that grows with run time."""

from __future__ import annotations

import math

#: Bins per factor of 10; 40 gives about 6 % resolution, plenty for p50/p99 of waits.
BINS_PER_DECADE = 40
#: Smallest wait told apart from zero (seconds); everything below lands in bin 0.
FLOOR_S = 1e-7
#: Decades above the floor (1e-7 s .. 1e3 s); longer waits land in the last bin.
DECADES = 10


class LogHistogram:
    """Counts of durations in logarithmic bins; not thread-safe (the caller locks).

    Memory is ``BINS_PER_DECADE * DECADES + 1`` integers whatever the number of samples.
    """

    __slots__ = ("_bins", "_count", "_max", "_sum")

    def __init__(self) -> None:
        self._bins = [0] * (BINS_PER_DECADE * DECADES + 1)
        self._count = 0
        self._sum = 0.0
        self._max = 0.0

    @property
    def count(self) -> int:
        return self._count

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else 0.0

    @property
    def max(self) -> float:
        return self._max

    def add(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if seconds < FLOOR_S:
            index = 0
        else:
            index = 1 + int(math.log10(seconds / FLOOR_S) * BINS_PER_DECADE)
            index = min(index, len(self._bins) - 1)
        self._bins[index] += 1
        self._count += 1
        self._sum += seconds
        self._max = max(self._max, seconds)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) in seconds: the upper edge of its bin, capped at max."""
        if not self._count:
            return 0.0
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for index, n in enumerate(self._bins):
            seen += n
            if seen >= rank:
                if index == 0:
                    return 0.0
                upper = FLOOR_S * 10 ** (index / BINS_PER_DECADE)
                return min(upper, self._max)
        return self._max  # pragma: no cover - the loop always reaches rank
