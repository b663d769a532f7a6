"""A candidate's confirmation series: the trader's fetch of one brings the others along.

The trader reads a candidate's higher timeframes one after the other; the warmer hears of
the first through the fetch hook (``before_fetch_klines``) and prefetches the others beside
it, without waiting, so the trader finds them in flight or cached. No test here times
anything: each waits for the warmer to be idle (``wait_idle``) before it looks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from sltrader_plugins import KlineFetch, Plugins, SingleFlightCache
from sltrader_plugins.manager import PluginManager
from sltrader_warming.config import WarmingConfig
from sltrader_warming.plugin import WarmingPlugin
from sltrader_warming.warmer import Warmer

from .conftest import CAPACITY, ConstantModel

HIGHER = ("5m", "15m", "1h")
IDLE_S = 30.0  # generous: only how long a broken warmer may keep a test waiting


def confirm(cache: Any, symbol: str) -> None:
    """What the host does to confirm a candidate: its higher timeframes, in order."""
    for tf in HIGHER:
        cache.get_klines(symbol, tf)


@pytest.fixture
def wired(clock: Any, exchange: Any) -> Callable[..., tuple[Warmer, SingleFlightCache]]:
    """A warmer told of every fetch of its cache, as the fetch hook tells it."""
    made: list[Warmer] = []

    def wire(capacity: int = CAPACITY, **settings: Any) -> tuple[Warmer, SingleFlightCache]:
        warmer: Warmer | None = None

        def fetch(symbol: str, timeframe: str, limit: int) -> Any:
            assert warmer is not None
            warmer.follow(symbol, timeframe)
            return exchange.fetch_klines(symbol, timeframe, limit)

        cache = SingleFlightCache(fetch, clock, capacity, "1m")
        warmer = Warmer(WarmingConfig(**settings), cache, clock, HIGHER)
        made.append(warmer)
        return warmer, cache

    yield wire
    for warmer in made:
        warmer.close()


def test_the_first_confirmation_fetch_brings_the_others(wired: Any, exchange: Any) -> None:
    warmer, cache = wired()
    cache.get_klines("ETH/USDT", "5m")  # the candidate's first confirmation read: a miss
    assert warmer.wait_idle(IDLE_S)
    assert exchange.requests[("ETH/USDT", "15m")] == 1
    assert exchange.requests[("ETH/USDT", "1h")] == 1
    # The trader's next reads hit, and no series was fetched twice.
    before = cache.stats()
    cache.get_klines("ETH/USDT", "15m")
    cache.get_klines("ETH/USDT", "1h")
    after = cache.stats()
    assert after.demand_hits - before.demand_hits == 2
    assert after.demand_misses == before.demand_misses
    assert exchange.total == 3
    metrics = warmer.metrics()
    assert metrics["follow_warms"] == 2 and metrics["prefetches_used"] == 2


def test_a_whole_confirmation_costs_the_same_requests(wired: Any, exchange: Any) -> None:
    warmer, cache = wired()
    for symbol in ("BTC_USDT", "1000PEPE-USD", "ADA-USD"):
        confirm(cache, symbol)
        assert warmer.wait_idle(IDLE_S)
    assert exchange.total == 9  # each series once, as without the warmer
    assert all(count == 1 for count in exchange.requests.values())
    stats = cache.stats()
    assert stats.demand_misses >= 3  # each candidate's first read
    assert stats.demand_hits + stats.demand_misses == 9


def test_only_what_the_cache_lacks_or_holds_stale(wired: Any, exchange: Any, clock: Any) -> None:
    warmer, cache = wired()
    clock.t = 1_700_000_100.0 + 1  # just after a 15m close (and not an 1h one)
    cache.get_klines("SOL_USDT", "1h")  # fetched: the others come along
    assert warmer.wait_idle(IDLE_S)
    total = exchange.total
    clock.advance(300)  # a 5m close: the 5m series is stale, 15m and 1h are not
    cache.get_klines("SOL_USDT", "5m")  # the trader's read of the stale series
    assert warmer.wait_idle(IDLE_S)
    assert exchange.total == total + 1  # the read itself; the fresh others are not fetched
    assert warmer.metrics()["follow_warms"] == 2


def test_base_timeframe_fetches_bring_nothing(wired: Any, exchange: Any) -> None:
    warmer, cache = wired()
    for symbol in ("BTC_USDT", "ETH/USDT"):
        cache.get_klines(symbol, "1m")  # a scan's read
    assert warmer.wait_idle(IDLE_S)
    assert exchange.total == 2 and warmer.metrics()["follow_warms"] == 0


def test_the_warmers_own_prefetches_bring_nothing(wired: Any, exchange: Any) -> None:
    warmer, cache = wired()
    # The warmer refreshing a signalled symbol's 5m series is no candidate being confirmed:
    # its fetch must not pull in the symbol's other series.
    cache.get_klines("XRP-USD", "5m")
    assert warmer.wait_idle(IDLE_S)
    cache.get_klines("XRP-USD", "15m")
    cache.get_klines("XRP-USD", "1h")
    assert exchange.total == 3
    warmer.follow("XRP-USD", "5m")  # fresh: nothing
    assert warmer.wait_idle(IDLE_S)
    assert exchange.total == 3
    # Its own prefetch of (DOGE_USDT, 5m), on a key nothing else holds:
    assert warmer._prefetch([("DOGE_USDT", "5m")], warmer.clock.now(), wait=True) == 1
    assert warmer.wait_idle(IDLE_S)
    assert exchange.requests[("DOGE_USDT", "15m")] == 0
    assert exchange.requests[("DOGE_USDT", "1h")] == 0


def test_a_refused_series_is_not_fetched_again_and_again(
    wired: Any, exchange: Any, clock: Any
) -> None:
    # Room for one series: every other one is refused admission, so each read of the
    # candidate misses. The cooldown keeps the warmer from refetching the others each time.
    warmer, cache = wired(capacity=1, cooldown_s=30)
    confirm(cache, "LINK_USDT")
    assert warmer.wait_idle(IDLE_S)
    confirm(cache, "LINK_USDT")
    assert warmer.wait_idle(IDLE_S)
    assert warmer.metrics()["follow_warms"] == 2  # the first fetch's two others only
    # Without the warmer: 6 requests (every read misses). With it, at most 2 more.
    assert exchange.total <= 6 + 2
    assert warmer.metrics()["cooldown_skips"] > 0


def test_off_by_configuration(wired: Any, exchange: Any) -> None:
    warmer, cache = wired(follow_confirmations=False)
    cache.get_klines("ETH/USDT", "5m")
    assert warmer.wait_idle(IDLE_S)
    assert exchange.total == 1 and warmer.metrics()["follow_warms"] == 0


def test_bounded_by_the_budget_and_the_threads(wired: Any, exchange: Any) -> None:
    warmer, cache = wired(request_budget=3, max_parallel=1)
    for symbol in ("A_USDT", "B_USDT", "C_USDT"):
        cache.get_klines(symbol, "5m")
    assert warmer.wait_idle(IDLE_S)
    metrics = warmer.metrics()
    assert metrics["follow_warms"] <= 3  # the cycle's budget
    assert metrics["follow_warms"] + metrics["budget_refusals"] + metrics["stalled_skips"] == 6
    assert warmer._live == 0 and not warmer._prefetching


def test_with_every_thread_busy_nothing_more_starts(wired: Any, exchange: Any) -> None:
    warmer, _ = wired(max_parallel=1)
    gate = threading.Event()
    exchange.fail = lambda key: not gate.wait(IDLE_S)  # holds each fetch until opened
    try:
        assert warmer.follow("A_USDT", "5m") == 2  # one thread, held at the gate
        # Not abandoned (nobody waited), yet busy: the next candidate's start nothing.
        assert warmer.follow("B_USDT", "5m") == 0
        assert warmer.metrics()["stalled_skips"] == 2
    finally:
        gate.set()
    assert warmer.wait_idle(IDLE_S)
    assert exchange.requests[("A_USDT", "1h")] == 1
    assert exchange.requests[("B_USDT", "15m")] == 0 and exchange.requests[("B_USDT", "1h")] == 0


def test_through_the_manager_and_the_fetch_call_site(
    clock: Any, exchange: Any, services: Any
) -> None:
    manager = PluginManager()
    plugin = WarmingPlugin()
    manager.register(plugin, "warming")
    plugins = Plugins(manager)
    cache = SingleFlightCache(plugins.fetching(exchange.fetch_klines), clock, CAPACITY, "1m")
    plugins.start(
        model=ConstantModel(),
        cache=cache,
        clock=clock,
        base_timeframe="1m",
        workers=8,
        confirm_timeframes=HIGHER,
    )
    try:
        # An observer: it only learns a candidate is being read, and never answers.
        hook = manager.hook.before_fetch_klines
        assert hook(fetch=KlineFetch("X_USDT", "1m", 3, 0.0)) == []
        confirm(cache, "BNB/USDT")
        assert plugin.warmer is not None and plugin.warmer.wait_idle(IDLE_S)
        assert exchange.total == 3
        assert manager.metrics()["warming.follow_warms"] == 2
        assert manager.faults() == {}
    finally:
        plugins.close()
