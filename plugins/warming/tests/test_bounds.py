"""With warming, a hung fetch still costs a scan one ``fetch_timeout_s``, not two.

The core's ``SingleFlightCache`` bounds each fetch (``fetch_timeout_s`` = :data:`T`), and
the warming plugin's ``before_scan`` prefetches the scan's missing symbols. When one
symbol's requests hang, ``before_scan`` waits for its prefetch and the scan then reads
it: both share the one fetch's deadline, so the two together wait :data:`T` once (the
plugin's own bound only ever cuts its wait shorter). Timed through a real PluginManager,
the scan's reads made as the host makes them, right after the hook.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import Config, Klines, SingleFlightCache
from sltrader_plugins.manager import PluginManager
from sltrader_warming.plugin import WarmingPlugin

from .conftest import CAPACITY, services_over

T = 0.2  #: the cache's fetch_timeout_s here
#: One bound with room for a loaded machine; two (the defect) would be 2 T.
ONCE = 1.6 * T
SICK = "SICK/USDT"
SYMBOLS = [SICK, "BTC_USDT", "ETH/USDT", "1000PEPE-USD"]


@pytest.fixture
def bounded(exchange: Any, clock: Any, gate: threading.Event) -> SingleFlightCache:
    """The fixtures' exchange behind a bounded cache; requests for SICK hang."""

    def fetch(symbol: str, timeframe: str, limit: int) -> Klines:
        if symbol == SICK:
            gate.wait(60)
        return exchange.fetch_klines(symbol, timeframe, limit)  # type: ignore[no-any-return]

    return SingleFlightCache(fetch, clock, CAPACITY, "1m", fetch_timeout_s=T)


@pytest.fixture
def host(clock: Any) -> Iterator[Callable[[Any], PluginManager]]:
    """The plugin started under a real manager over ``cache``; shut down at the end."""
    managers: list[PluginManager] = []

    def start(cache: Any) -> PluginManager:
        manager = PluginManager()
        manager.config = Config.from_mapping({"plugins": {"warming": {"step_aside": False}}})
        manager.register(WarmingPlugin(), "warming")
        manager.start(services_over(cache, clock, workers=4))
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        manager.shutdown()


def scan(manager: PluginManager, cache: SingleFlightCache, now: float) -> tuple[float, list[str]]:
    """``before_scan``, then the scan's reads: the seconds it took and the symbols that
    timed out."""
    started = time.monotonic()
    manager.hook.before_scan(symbols=SYMBOLS, timeframe="1m", now=now)
    timed_out = []
    for symbol in SYMBOLS:
        try:
            assert cache.get_klines(symbol, "1m").last_close_time <= now
        except TimeoutError:
            timed_out.append(symbol)
    return time.monotonic() - started, timed_out


def test_a_hung_symbol_costs_a_warmed_scan_one_bound(
    host: Callable[[Any], PluginManager],
    bounded: SingleFlightCache,
    clock: Any,
    exchange: Any,
    gate: threading.Event,
) -> None:
    manager = host(bounded)
    took, timed_out = scan(manager, bounded, clock.now())
    assert timed_out == [SICK]
    assert took < ONCE
    # Every other symbol was prefetched and read from the cache: one request each.
    assert {s: exchange.requests[(s, "1m")] for s in SYMBOLS[1:]} == dict.fromkeys(SYMBOLS[1:], 1)
    stats = bounded.stats()
    assert (stats.demand_hits, stats.prefetches_used) == (len(SYMBOLS) - 1, len(SYMBOLS) - 1)
    assert manager.faults() == {}

    # The next scan of the same candle: the hung request still holds the key, so neither
    # the plugin's prefetch nor the scan's read waits for it again.
    took, timed_out = scan(manager, bounded, clock.now())
    assert timed_out == [SICK] and took < T / 2

    # The next candle: the key is asked for again, and that costs the scan one bound.
    clock.advance(60)
    took, timed_out = scan(manager, bounded, clock.now())
    assert timed_out == [SICK] and took < ONCE

    # The exchange answers again: the hung requests return, and the trader recovers.
    gate.set()
    deadline = time.monotonic() + 10
    while bounded._inflight:
        assert time.monotonic() < deadline, "the hung requests never landed"
        time.sleep(0.005)
    took, timed_out = scan(manager, bounded, clock.now())
    assert timed_out == []
    assert manager.faults() == {}


def test_a_plugin_bound_shorter_than_the_fetchs_adds_nothing(
    host: Callable[[Any], PluginManager],
    bounded: SingleFlightCache,
    clock: Any,
    set_bound: Callable[..., None],
) -> None:
    # The hook stops waiting first; the scan's read then waits out what is left of the
    # same fetch's bound, no more.
    set_bound(T / 4)
    manager = host(bounded)
    took, timed_out = scan(manager, bounded, clock.now())
    assert timed_out == [SICK]
    assert took < ONCE
    metrics = manager.hook.report_metrics()[0]
    assert metrics["warming.abandoned"] == 1


def test_a_cached_empty_series_is_no_cache_fault(
    host: Callable[[Any], PluginManager],
    clock: Any,
    exchange: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A symbol the exchange has no candle for yet (just listed): its series is empty,
    # cached without a close time. The warmer sees it as absent and fetches it before the
    # scan (as the scan would), with no fault counted or logged.
    listed = "NEW_USDT"

    def fetch(symbol: str, timeframe: str, limit: int) -> Klines:
        klines = exchange.fetch_klines(symbol, timeframe, limit)
        if symbol != listed:
            return klines  # type: ignore[no-any-return]
        none = np.zeros(0)
        return Klines(symbol, timeframe, none, none, none, none, none, none)

    cache = SingleFlightCache(fetch, clock, CAPACITY, "1m")
    assert cache.get_klines(listed, "1m").n == 0
    manager = host(cache)
    with caplog.at_level(logging.WARNING, logger="sltrader_warming"):
        manager.hook.before_scan(symbols=[listed, "BTC_USDT"], timeframe="1m", now=clock.now())
    metrics = manager.hook.report_metrics()[0]
    assert metrics["warming.failures"] == 0
    assert metrics["warming.new_symbol_warms"] == 2
    assert caplog.records == []
