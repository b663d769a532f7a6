"""Micro-benchmarks of the warming plugin's own overhead (``pytest bench/test_warming_bench.py``).

What the warmer costs the host's main loop, apart from the prefetch requests themselves:
recording one scan of the universe, and choosing the keys to refresh at a candle close.
The cache here answers from memory (no exchange), so the figures are the policy alone.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sltrader_warming")
pytest.importorskip("pytest_benchmark")

from sltrader_plugins import CacheStats, last_close_time
from sltrader_warming.config import WarmingConfig
from sltrader_warming.tracker import AccessTracker
from sltrader_warming.warmer import Warmer

UNIVERSE = [f"{base}{sep}USDT" for base in ("BTC", "ETH", "SOL", "PEPE") for sep in "_/-"] + [
    f"SYM{i}_USDT" for i in range(188)
]


class _Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_040.0

    def now(self) -> float:
        return self.t


class _MemoryCache:
    """A cache whose prefetch costs nothing: isolates the warmer's own work."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.latest: dict[tuple[str, str], float] = {}

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        newest = last_close_time(timeframe, self.clock.now())
        if self.latest.get((symbol, timeframe), -1.0) >= newest:
            return False
        self.latest[(symbol, timeframe)] = newest
        return True

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        return self.latest.get((symbol, timeframe))

    def stats(self) -> CacheStats:
        return CacheStats()


def test_record_scan_of_200_symbols(benchmark) -> None:  # type: ignore[no-untyped-def]
    tracker = AccessTracker(max_tracked=4096)
    benchmark(tracker.record_many, UNIVERSE, "1m", 1, 0.0)


def test_refresh_200_stale_keys(benchmark) -> None:  # type: ignore[no-untyped-def]
    clock = _Clock()
    cache = _MemoryCache(clock)
    warmer = Warmer(WarmingConfig(cooldown_s=0, max_parallel=1), cache, clock, ("5m",))
    for symbol in UNIVERSE:  # cached, so each close makes every series stale
        cache.prefetch(symbol, "1m")
    for _ in range(3):
        warmer.record_scan(UNIVERSE, "1m", clock.now())

    def close_and_refresh() -> int:
        clock.t += 60
        warmer.record_scan(UNIVERSE, "1m", clock.now())
        return warmer.refresh("1m", clock.now(), clock.now() + 10)

    assert benchmark(close_and_refresh) == len(UNIVERSE)
    warmer.close()
