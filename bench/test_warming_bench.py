"""Micro-benchmarks of the warming plugin's own overhead (``pytest bench/test_warming_bench.py``).

What the warmer costs the host's main loop, apart from the prefetch requests themselves:
recording one scan of the universe, and choosing the keys to refresh at a candle close.
The cache here answers from memory (no exchange), so the figures are the policy alone.
And what it is for: the demand hit rate of a small simulated loop, with and without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("sltrader_warming")
pytest.importorskip("pytest_benchmark")

from sltrader_plugins import (
    CacheStats,
    Klines,
    SingleFlightCache,
    last_close_time,
    timeframe_seconds,
)
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
    # Every symbol of the scan is tracked under its own key and counted.
    assert len(tracker) == len(UNIVERSE)
    assert all(tracker.score(symbol, "1m") >= 1 for symbol in UNIVERSE)
    assert tracker.score("BTC", "USDT_1m") == 0


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
    # Each call really refreshed: every series now holds the candle that just closed.
    closed = last_close_time("1m", clock.now())
    assert all(cache.latest[(symbol, "1m")] == closed for symbol in UNIVERSE)
    metrics = warmer.metrics()
    assert metrics["prefetches"] >= len(UNIVERSE) and metrics["failures"] == 0
    warmer.close()


class _Exchange:
    """Serves constant candles up to the last close by the clock's now; counts requests."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.requests = 0

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        self.requests += 1
        newest = last_close_time(timeframe, self.clock.now())
        open_time = newest - timeframe_seconds(timeframe) * np.arange(3, 0, -1)
        ones = np.ones(3)
        return Klines(symbol, timeframe, open_time, ones, ones, ones, ones, ones)


def _simulate(warming: bool, minutes: int = 10) -> tuple[float, int]:
    """A scan of the universe every 15 s for ``minutes``, the warmer's hooks around it.

    Returns the demand hit rate and the exchange requests.
    """
    clock = _Clock()
    exchange = _Exchange(clock)
    cache = SingleFlightCache(exchange.fetch_klines, clock, capacity=len(UNIVERSE) + 16)
    config = WarmingConfig(warm_threshold=1, max_parallel=4)
    warmer: Any = Warmer(config, cache, clock, ()) if warming else None
    for scan in range(4 * minutes):
        if warmer is not None:
            if scan % 4 == 0 and scan:  # a 1m candle closed since the last scan
                warmer.refresh("1m", clock.now(), clock.now())
            warmer.warm_universe(UNIVERSE, "1m")
        for symbol in UNIVERSE:
            cache.get_klines(symbol, "1m")
        if warmer is not None:
            warmer.record_scan(UNIVERSE, "1m", clock.now())
        clock.t += 15  # the clock starts at a 1m close
    if warmer is not None:
        warmer.close()
    return cache.stats().hit_rate, exchange.requests


def test_hit_rate_rises_with_warming(benchmark) -> None:  # type: ignore[no-untyped-def]
    """The first scan after each close misses every series without the warmer (3 scans
    in 4 hit); with it, every read hits: the symbols are fetched just before the first
    scan and refreshed at each close."""
    plain_rate, plain_requests = _simulate(warming=False)
    rate, requests = benchmark.pedantic(_simulate, args=(True,), rounds=3, iterations=1)
    benchmark.extra_info["hit_rate"] = rate
    benchmark.extra_info["hit_rate_without_warming"] = plain_rate
    assert plain_rate == pytest.approx(0.75, abs=0.01)
    assert rate == 1.0
    # The same series fetched, only earlier: not one request more.
    assert requests == plain_requests
