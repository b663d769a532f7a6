"""A demand read of a key the warmer is prefetching waits for that fetch: one request.

Checked with the core's ``SingleFlightCache`` over the tests' counting exchange, and over
the reference host's replay exchange when the reference host is importable (the plugin
itself never imports it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sltrader_plugins import SingleFlightCache
from sltrader_warming.config import WarmingConfig
from sltrader_warming.warmer import Warmer

SYMBOLS = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD"]


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


def _race(warmer: Warmer, read: Any, requests: Any, key: tuple[str, str]) -> Any:
    """Start the warmer's refresh, and read ``key`` on demand while its fetch is in flight."""
    before = requests()
    refresher = threading.Thread(target=warmer.refresh, args=("1m", 0.0, 0.0))
    refresher.start()
    _wait_until(lambda: requests() > before)  # the prefetch request has gone out
    result = read(*key)
    refresher.join()
    return result


def test_demand_read_waits_for_prefetch(cache: Any, clock: Any, exchange: Any) -> None:
    warmer = Warmer(WarmingConfig(warm_threshold=1, max_parallel=1), cache, clock, ())
    key = ("ETH/USDT", "1m")
    cache.get_klines(*key)
    warmer.record_scan([key[0]], "1m", clock.now())
    clock.advance(60)
    exchange.latency = 0.05
    klines = _race(warmer, cache.get_klines, lambda: exchange.requests[key], key)
    assert exchange.requests[key] == 2  # the first read, then one fetch for the race
    assert klines.last_close_time == clock.now()  # the candle that just closed, no later
    # The racing read was served by the prefetch: a hit, and the prefetch was used.
    stats = cache.stats()
    assert (stats.demand_hits, stats.demand_misses) == (1, 1)
    assert (stats.prefetches, stats.prefetches_used, stats.prefetches_wasted) == (1, 1, 0)
    warmer.close()


def test_host_cache_demand_read_waits_for_prefetch() -> None:
    host_exchange = pytest.importorskip("sltrader_plugins.host.exchange")
    start = 1_700_006_400.0  # a day boundary, as the market model wants
    market = host_exchange.MarketConfig(
        seed=7, start=start, history_s=2 * 86400.0, horizon_s=3600.0
    )
    clock = host_exchange.SimClock(start + 30)
    exchange = host_exchange.ReplayExchange(market, SYMBOLS, clock, latency_s=0.05, jitter=0.0)
    cache = SingleFlightCache(exchange.fetch_klines, clock, capacity=16)
    warmer = Warmer(WarmingConfig(warm_threshold=1, max_parallel=4), cache, clock, ())
    for symbol in SYMBOLS:
        cache.get_klines(symbol, "1m")
    # Only ETH/USDT is hot, so the first request after the close is its prefetch.
    warmer.record_scan(["ETH/USDT"], "1m", clock.now())
    clock.advance(60)
    before = exchange.requests
    klines = _race(warmer, cache.get_klines, lambda: exchange.requests, ("ETH/USDT", "1m"))
    # One request: the racing demand read waited for the prefetch and made none of its own.
    assert exchange.requests - before == 1
    assert klines.last_close_time == 1_700_006_400.0 + 60  # the candle that just closed
    assert klines.last_close_time <= clock.now()  # no look-ahead through the prefetch
    stats = cache.stats()
    assert stats.demand_misses == len(SYMBOLS)  # only the initial reads
    assert stats.demand_hits == 1
    assert stats.prefetches == 1
    assert stats.prefetches_used == 1
    warmer.close()
