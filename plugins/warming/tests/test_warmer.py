"""The warming policy against the core's single-flight cache and a counting exchange."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sltrader_plugins import CacheStats, last_close_time
from sltrader_warming.config import WarmingConfig
from sltrader_warming.warmer import Warmer

T0 = 1_700_000_040.0  # a 1m close, not a 5m close (same as conftest)
MakeWarmer = Callable[..., Warmer]


def scan(warmer: Warmer, cache: Any, clock: Any, symbols: list[str], tf: str = "1m") -> None:
    """What the host does in one scan: a demand read of every symbol, then the hook."""
    for symbol in symbols:
        cache.get_klines(symbol, tf)
    warmer.record_scan(symbols, tf, clock.now())


def prefetched(exchange: Any, since: int) -> list[tuple[str, str]]:
    return [key for key, _, _ in exchange.fetches[since:]]


def test_refreshes_hottest_stale_keys_in_score_order(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(top_k=3, warm_threshold=1, max_parallel=1)
    symbols = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL_USDT", "XRP/USDT", "DOGE-USD"]
    # Symbol i is read i + 1 times: the hottest are the last ones in scan order, so a warmer
    # that took "the first few found" would pick the wrong ones.
    for i, symbol in enumerate(symbols):
        for _ in range(i + 1):
            cache.get_klines(symbol, "1m")
            warmer.record_scan([symbol], "1m", clock.now())
    clock.advance(60)
    before = len(exchange.fetches)
    assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 3
    assert prefetched(exchange, before) == [
        ("DOGE-USD", "1m"),
        ("XRP/USDT", "1m"),
        ("SOL_USDT", "1m"),
    ]
    # The next scan hits on the warmed keys and misses only on the colder ones.
    before_scan = cache.stats()
    scan(warmer, cache, clock, symbols)
    after_scan = cache.stats()
    assert after_scan.demand_hits - before_scan.demand_hits == 3
    assert after_scan.demand_misses - before_scan.demand_misses == 3
    assert warmer.metrics()["prefetches"] == 3
    assert warmer.metrics()["prefetches_used"] == 3
    assert warmer.metrics()["prefetches_wasted"] == 0


def test_threshold_keeps_cold_keys_out(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=3)
    for _ in range(3):
        scan(warmer, cache, clock, ["HOT_1"])
    scan(warmer, cache, clock, ["COLD_1"])
    clock.advance(60)
    before = len(exchange.fetches)
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert prefetched(exchange, before) == [("HOT_1", "1m")]


def test_fresh_keys_are_not_prefetched(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1)
    scan(warmer, cache, clock, ["BTC_USDT", "ETH/USDT"])
    clock.advance(30)  # same candle: nothing has closed since the read
    before = exchange.total
    assert warmer.refresh("1m", T0, clock.now() + 10) == 0
    assert exchange.total == before


def test_cooldown_limits_each_key_to_one_refresh_per_period(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1, cooldown_s=90)
    key = ("BTC_USDT", "1m")
    warmed_at = []
    for minute in range(1, 6):
        scan(warmer, cache, clock, ["BTC_USDT"])
        clock.advance(60)
        before = exchange.requests[key]
        warmer.refresh("1m", clock.now(), clock.now() + 10)
        if exchange.requests[key] > before:
            warmed_at.append(minute)
    # Warmed at +60 s, skipped at +120 s (60 s < 90 s), warmed at +180 s, ...
    assert warmed_at == [1, 3, 5]
    assert warmer.metrics()["cooldown_skips"] == 2


def test_no_look_ahead_at_candle_boundaries(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1)
    symbols = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD"]
    scan(warmer, cache, clock, symbols)
    close = T0 + 60
    clock.t = close - 1e-6  # a hair before the close: the candle has not closed yet
    before = exchange.total
    assert warmer.refresh("1m", T0, close) == 0
    assert exchange.total == before
    clock.t = close  # a candle that closes exactly at now has closed
    assert warmer.refresh("1m", close, close + 10) == 3
    for _, newest, now in exchange.fetches:
        assert newest <= now
    for symbol in symbols:
        assert cache.latest_close_time(symbol, "1m") == close


def test_higher_timeframe_refreshed_only_when_its_own_candle_closes(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1)
    clock.t = T0 + 120  # a 1m close, 60 s after a 5m close
    next_5m = last_close_time("5m", clock.now()) + 300
    cache.get_klines("ETH/USDT", "5m")
    warmer.record_signal("ETH/USDT", "1m")  # tracks (ETH/USDT, 5m) with the signal weight
    key = ("ETH/USDT", "5m")
    assert exchange.requests[key] == 1
    closes = 0
    while clock.now() < next_5m:
        clock.advance(60)
        warmer.refresh("1m", clock.now(), clock.now() + 10)
        closes += 1
        if clock.now() < next_5m:  # 1m closes that are not 5m closes: nothing to do
            assert exchange.requests[key] == 1
    assert closes == 4
    # The host reported a 1m close, yet the 5m key that just went stale is refreshed too.
    assert exchange.requests[key] == 2
    assert cache.latest_close_time(*key) == next_5m


def test_signal_warms_its_stale_higher_timeframes_now(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    higher = ("5m", "15m", "1h", "4h")
    warmer = make_warmer(higher=higher, warm_threshold=100)  # the threshold does not apply
    symbol = "1000PEPE-USD"
    clock.t = T0 - 3600
    for tf in ("5m", "15m", "1h"):
        cache.get_klines(symbol, tf)  # an hour ago: all stale now
    clock.t = T0
    cache.get_klines(symbol, "5m")  # fresh again: must not be fetched
    warmer.record_signal(symbol, "1m")
    assert exchange.requests[(symbol, "15m")] == 2
    assert exchange.requests[(symbol, "1h")] == 2
    assert exchange.requests[(symbol, "5m")] == 2  # the two demand reads only
    assert exchange.requests[(symbol, "4h")] == 0  # never held: not fetched on a guess
    assert warmer.metrics()["signal_warms"] == 2
    assert warmer.tracker.score(symbol, "1m") == warmer.config.signal_weight
    assert warmer.tracker.score(symbol, "1h") == warmer.config.signal_weight
    # A second signal fetches nothing more (fresh now, and within the cooldown anyway).
    total = exchange.total
    warmer.record_signal(symbol, "1m")
    assert exchange.total == total


@pytest.mark.parametrize("how", ["refused", "evicted"])
def test_series_the_cache_does_not_hold_are_not_refreshed(
    make_cache: Callable[..., Any], clock: Any, exchange: Any, how: str
) -> None:
    cache = make_cache(capacity=1)  # room for one series: the other is not kept
    warmer = Warmer(WarmingConfig(warm_threshold=1), cache, clock, ())
    try:
        if how == "refused":
            # Read no more often than the series it would replace: refused admission.
            scan(warmer, cache, clock, ["KEPT_USDT", "EVICTED/USDT"])
            assert cache.extra_stats()["refused_admissions"] == 1
        else:
            scan(warmer, cache, clock, ["EVICTED/USDT", "KEPT_USDT"])  # KEPT_USDT refused
            scan(warmer, cache, clock, ["KEPT_USDT"])  # now read more often: admitted
            assert cache.stats().evictions == 1
        assert cache.latest_close_time("EVICTED/USDT", "1m") is None
        assert cache.latest_close_time("KEPT_USDT", "1m") == T0
        requests = exchange.requests[("EVICTED/USDT", "1m")]
        clock.advance(60)
        assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 1
        assert exchange.requests[("EVICTED/USDT", "1m")] == requests == 1
        assert cache.latest_close_time("KEPT_USDT", "1m") == T0 + 60
    finally:
        warmer.close()


def test_symbols_new_to_the_scan_are_fetched_just_before_it(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(max_parallel=4)
    scan(warmer, cache, clock, ["OLD_USDT"])
    universe = ["OLD_USDT", "NEW/USDT", "NEWER-USD"]
    assert warmer.warm_universe(universe, "1m") == 2
    assert exchange.requests[("OLD_USDT", "1m")] == 1
    misses = cache.stats().demand_misses
    scan(warmer, cache, clock, universe)
    assert cache.stats().demand_misses == misses  # every read of the scan hit
    assert warmer.metrics()["new_symbol_warms"] == 2
    assert warmer.metrics()["prefetches_wasted"] == 0


def test_new_symbol_warming_can_be_turned_off(make_warmer: MakeWarmer, exchange: Any) -> None:
    warmer = make_warmer(warm_new_symbols=False)
    assert warmer.warm_universe(["NEW/USDT"], "1m") == 0
    assert exchange.total == 0


@pytest.mark.parametrize("probe", [True, False])
def test_cached_higher_timeframes_of_scanned_symbols_are_probed(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any, probe: bool
) -> None:
    warmer = make_warmer(warm_threshold=1, probe_higher_timeframes=probe)
    clock.t = T0 + 120  # 60 s after a 5m close
    scan(warmer, cache, clock, ["BTC_USDT", "ETH/USDT"])
    cache.get_klines("BTC_USDT", "5m")  # a candidate check the warmer was not told about
    warmer.refresh("1m", clock.now(), clock.now())  # probes what is due now: nothing stale
    for _ in range(4):  # up to the next 5m close
        clock.advance(60)
        scan(warmer, cache, clock, ["BTC_USDT", "ETH/USDT"])
        warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert exchange.requests[("BTC_USDT", "5m")] == (2 if probe else 1)
    assert exchange.requests[("ETH/USDT", "5m")] == 0  # not held: not guessed


def test_symbol_that_left_the_universe_stops_being_warmed(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1, cooldown_s=0)
    for _ in range(5):
        scan(warmer, cache, clock, ["STAYS_USDT", "LEAVES/USDT"])
    for _ in range(3):
        clock.advance(60)
        warmer.refresh("1m", clock.now(), clock.now() + 10)
        scan(warmer, cache, clock, ["STAYS_USDT"])
    # Warmed at the first close (it was read within the last candle), never after.
    assert exchange.requests[("LEAVES/USDT", "1m")] == 2
    assert exchange.requests[("STAYS_USDT", "1m")] == 4
    # Each refresh of STAYS_USDT was read by the scan after it; the one of LEAVES/USDT
    # went stale unread at the next close, which the cache counts as waste.
    metrics = warmer.metrics()
    assert (metrics["prefetches_used"], metrics["prefetches_wasted"]) == (3, 1)


def test_budget_is_never_exceeded_and_refills_each_cycle(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    exchange.latency = 0.002
    warmer = make_warmer(warm_threshold=1, request_budget=10, max_parallel=4)
    symbols = [f"S{i}_USDT" for i in range(40)]
    scan(warmer, cache, clock, symbols)
    clock.advance(60)
    before = exchange.total
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert exchange.total - before == 10
    assert warmer.metrics()["budget_refusals"] == 30
    assert exchange.max_inflight <= 4
    # Another close in the same cycle: the budget is spent, nothing more goes out.
    clock.advance(60)
    before = exchange.total
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert exchange.total == before
    # A scan starts a new cycle.
    scan(warmer, cache, clock, symbols)
    clock.advance(60)
    before = exchange.total
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert exchange.total - before == 10


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.integers(0, 12),
    parallel=st.integers(1, 6),
    n_symbols=st.integers(0, 30),
    signals=st.lists(st.integers(0, 29), max_size=5),
)
def test_requests_per_cycle_never_exceed_budget(
    make_cache: Callable[..., Any],
    clock: Any,
    exchange: Any,
    budget: int,
    parallel: int,
    n_symbols: int,
    signals: list[int],
) -> None:
    cache = make_cache()  # fresh state per example (fixtures are shared)
    exchange.requests.clear()
    config = WarmingConfig(warm_threshold=1, request_budget=budget, max_parallel=parallel)
    warmer = Warmer(config, cache, clock, ("5m", "15m", "1h"))
    try:
        symbols = [f"P{i}-USD" for i in range(n_symbols)]
        for _ in range(3):
            scan(warmer, cache, clock, symbols)
            before = exchange.total
            for i in signals:
                warmer.record_signal(f"P{i}-USD", "1m")
            clock.advance(60)
            warmer.refresh("1m", clock.now(), clock.now() + 10)
            assert exchange.total - before <= budget
    finally:
        warmer.close()


def test_a_waited_refresh_returns_with_its_threads_free(
    make_warmer: MakeWarmer, cache: Any, clock: Any
) -> None:
    """The hook's wait covers its threads' leaving, not only its last prefetch: the next
    cycle finds every thread free. (It used to end at the last prefetch, and a refresh
    right after was refused as "every thread busy" while the threads were on their way out.)
    """
    warmer = make_warmer(warm_threshold=1, max_parallel=4)
    symbols = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL-USD"]
    for cycle in range(300):
        scan(warmer, cache, clock, symbols)
        clock.advance(60)
        assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 4, cycle
        assert warmer.wait_idle(0), cycle
    assert warmer.metrics()["prefetches"] == 4 * 300


def test_failing_exchange_is_counted_and_logged_once(
    make_warmer: MakeWarmer,
    cache: Any,
    clock: Any,
    exchange: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    warmer = make_warmer(warm_threshold=1, max_parallel=4)
    symbols = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL-USD"]
    scan(warmer, cache, clock, symbols)
    exchange.fail = lambda key: True
    clock.advance(60)
    with caplog.at_level(logging.WARNING, logger="sltrader_warming"):
        warmer.refresh("1m", clock.now(), clock.now() + 10)  # must not raise
        warmer.record_signal("ETH/USDT", "1m")  # nor here
    metrics = warmer.metrics()
    assert metrics["failures"] == 4
    assert metrics["prefetches"] == 0
    warnings = [r for r in caplog.records if r.name == "sltrader_warming"]
    assert len(warnings) == 1 and warnings[0].exc_info is not None
    # The exchange recovers: the next cycle warms again (failures do not wedge anything).
    exchange.fail = lambda key: False
    scan(warmer, cache, clock, symbols)
    clock.advance(60)
    assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 4
    assert warmer.metrics()["prefetches"] == 4
    warmer.close()
    assert "4 cache call(s) of the warmer failed" in caplog.text


def test_cache_that_cannot_answer_is_counted_not_raised(
    make_warmer: MakeWarmer, cache: Any, clock: Any
) -> None:
    warmer = make_warmer(warm_threshold=1, probe_higher_timeframes=False)
    scan(warmer, cache, clock, ["BTC_USDT"])

    def broken(symbol: str, timeframe: str) -> float | None:
        raise RuntimeError("cache down")

    cache.latest_close_time = broken
    clock.advance(60)
    assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 0
    assert warmer.metrics()["failures"] == 1


def test_prefetch_answered_without_request_gives_budget_back(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1, request_budget=2, max_parallel=1)
    scan(warmer, cache, clock, ["B/2", "C-3", "A_1"])  # ties rank most recent first
    clock.advance(60)
    # A demand read gets there between the warmer's staleness check and its prefetch.
    cache.get_klines("A_1", "1m")
    real = cache.latest_close_time
    cache.latest_close_time = lambda s, tf: real(s, tf) - (60 if s == "A_1" else 0)
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    metrics = warmer.metrics()
    assert (metrics["already_fresh"], metrics["prefetches"]) == (1, 1)
    assert metrics["budget_refusals"] == 1  # B/2: both slots were reserved
    # The fresh answer cost no request, so its slot went back: B/2 fits in this cycle.
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert warmer.metrics()["prefetches"] == 2
    assert exchange.requests[("B/2", "1m")] == 2


def test_metrics_names_and_values(make_warmer: MakeWarmer) -> None:
    metrics = make_warmer().metrics()
    for name in (
        "prefetches",
        "prefetches_used",
        "prefetches_wasted",
        "budget_refusals",
        "failures",
    ):
        assert metrics[name] == 0.0
    assert not any("." in name for name in metrics)  # the manager adds the plugin's name
    assert all(isinstance(value, float) for value in metrics.values())


def test_wasted_prefetch_is_reported(
    make_warmer: MakeWarmer, cache: Any, clock: Any, exchange: Any
) -> None:
    warmer = make_warmer(warm_threshold=1, cooldown_s=0, recency_candles=3)
    scan(warmer, cache, clock, ["GONE_USDT"])
    clock.advance(60)
    warmer.refresh("1m", clock.now(), clock.now() + 10)
    assert warmer.metrics()["prefetches_wasted"] == 0  # fresh: it may still be read
    # A prefetched series is waste once it goes stale unread, before anything replaces it.
    clock.advance(60)
    assert warmer.metrics()["prefetches_wasted"] == 1
    warmer.refresh("1m", clock.now(), clock.now() + 10)  # replaces it: still one
    assert warmer.metrics()["prefetches"] == 2
    assert warmer.metrics()["prefetches_wasted"] == 1
    clock.advance(60)  # the second one goes stale unread too
    assert warmer.metrics()["prefetches_wasted"] == 2
    assert warmer.metrics()["prefetches_used"] == 0


class ExchangeStyleCache:
    """A trader's own cache that states close times as exchanges do: ``open + interval -
    1 ms`` for the newest candle it holds. Every prefetch is recorded and refetches."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.latest: dict[tuple[str, str], float] = {}
        self.prefetched: list[tuple[str, str]] = []

    def read(self, symbol: str, timeframe: str) -> None:
        """A demand read: the series up to the last candle closed by now."""
        self.latest[(symbol, timeframe)] = last_close_time(timeframe, self.clock.now()) - 0.001

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        self.prefetched.append((symbol, timeframe))
        self.read(symbol, timeframe)
        return True

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        return self.latest.get((symbol, timeframe))

    def stats(self) -> CacheStats:
        return CacheStats()


def test_exchange_style_close_times_count_as_fresh(clock: Any) -> None:
    """boundary - 1 ms names the candle that closed at the boundary: nothing to refetch."""
    cache = ExchangeStyleCache(clock)
    warmer = Warmer(WarmingConfig(warm_threshold=1, cooldown_s=0), cache, clock, ("5m",))
    try:
        symbols = ["BTC_USDT", "ETH/USDT"]
        for symbol in symbols:
            cache.read(symbol, "1m")
            cache.read(symbol, "5m")
        warmer.record_scan(symbols, "1m", clock.now())
        assert warmer.warm_universe(symbols, "1m") == 0  # held, so not new
        warmer.record_signal("ETH/USDT", "1m")  # its 5m series is fresh
        assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 0
        assert cache.prefetched == []
        # A candle later (T0 + 60 s closes a 1m and a 5m candle) every series is stale.
        clock.advance(60)
        assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 4
        assert sorted(cache.prefetched) == sorted(
            (symbol, tf) for symbol in symbols for tf in ("1m", "5m")
        )
        # Refreshed in the same exchange style, they are fresh again.
        assert warmer.refresh("1m", clock.now(), clock.now() + 10) == 0
        assert len(cache.prefetched) == 4
    finally:
        warmer.close()


def test_a_batch_that_finds_its_threads_still_held_starts_nothing_and_gives_back(
    make_warmer: MakeWarmer, exchange: Any
) -> None:
    # The moment between a thread leaving the warmer's count and being free for another
    # call, made to last: the warmer counts no thread busy, yet none can start.
    warmer = make_warmer(max_parallel=1)
    gate = threading.Event()
    held = warmer._threads.start(gate.wait, 30)
    assert held is not None
    try:
        assert warmer.warm_universe(["NEW/USDT"], "1m") == 0
        assert exchange.total == 0
        assert warmer.metrics()["stalled_skips"] == 1
        assert warmer.wait_idle(0)  # nothing of the batch was left running
    finally:
        gate.set()
    assert held.wait(30)
    deadline = time.monotonic() + 10
    while warmer._threads.running and time.monotonic() < deadline:
        time.sleep(0.005)
    assert warmer.warm_universe(["NEW/USDT"], "1m") == 1  # its reservation came back
    assert exchange.requests[("NEW/USDT", "1m")] == 1
