"""The plugin as a host sees it: through a real PluginManager, hooks called with keywords."""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sltrader_plugins import ConfigError, KlineFetch, Signal
from sltrader_plugins.manager import PluginManager
from sltrader_warming.plugin import WarmingPlugin

SYMBOLS = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD"]

Start = Callable[..., tuple[PluginManager, WarmingPlugin]]


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="sltrader")
    (ep,) = [ep for ep in eps if ep.name == "warming"]
    assert ep.load() is WarmingPlugin


def test_registers_only_known_hooks() -> None:
    manager = PluginManager()
    manager.register(WarmingPlugin(), "warming")
    assert set(manager.hooks_of("warming")) == {
        "on_start",
        "before_scan",
        "on_scan_complete",
        "on_signal",
        "on_candle_close",
        "before_fetch_klines",
        "report_metrics",
        "report_summary",
        "on_shutdown",
    }


def test_scan_close_signal_cycle_through_the_manager(
    start: Start, cache: Any, clock: Any, exchange: Any
) -> None:
    manager, _ = start({"warm_threshold": 1})
    hook = manager.hook
    # Nothing cached yet: the warmer fetches the scan's symbols just before it.
    hook.before_scan(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    assert exchange.total == 3
    for symbol in SYMBOLS:
        cache.get_klines(symbol, "1m")
    assert cache.stats().demand_misses == 0
    hook.on_scan_complete(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    for tf in ("5m", "15m", "1h"):
        cache.get_klines("ETH/USDT", tf)  # the host confirms the candidate
    signal = Signal(
        symbol="ETH/USDT", timeframe="1m", side="buy", probability=0.7, time=clock.now()
    )
    hook.on_signal(signal=signal)
    assert exchange.total == 3 + 3  # just read: nothing to warm yet
    clock.advance(60)
    hook.on_candle_close(timeframe="1m", close_time=clock.now(), next_scan_time=clock.now() + 10)
    for symbol in SYMBOLS:
        assert exchange.requests[(symbol, "1m")] == 2
    # That close was also a 5m and a 15m close (not 1h): the signalled symbol's series of
    # those timeframes went stale and were refreshed too.
    assert exchange.requests[("ETH/USDT", "5m")] == 2
    assert exchange.requests[("ETH/USDT", "15m")] == 2
    assert exchange.requests[("ETH/USDT", "1h")] == 1
    # The next scan hits everywhere.
    hits = cache.stats().demand_hits
    hook.before_scan(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    for symbol in SYMBOLS:
        cache.get_klines(symbol, "1m")
    assert cache.stats().demand_hits - hits == 3
    metrics = manager.metrics()
    assert metrics["warming.prefetches"] == 3 + 3 + 2
    assert metrics["warming.prefetches_used"] == 3 + 3
    assert metrics["warming.failures"] == 0
    manager.shutdown()
    assert manager.faults() == {}


def test_higher_timeframes_from_config(start: Start, cache: Any, clock: Any, exchange: Any) -> None:
    manager, _ = start({"higher_timeframes": ["4h"]})
    for tf in ("1h", "4h"):
        cache.get_klines("SOL-USD", tf)
    clock.advance(4 * 3600)
    signal = Signal(
        symbol="SOL-USD", timeframe="1m", side="sell", probability=0.2, time=clock.now()
    )
    manager.hook.on_signal(signal=signal)
    assert exchange.requests == {("SOL-USD", "1h"): 1, ("SOL-USD", "4h"): 2}


def test_works_unchanged_under_another_name(
    start: Start, cache: Any, clock: Any, exchange: Any
) -> None:
    # "enabled" is the manager's: the plugin never sees it, so it is no unknown key.
    manager, plugin = start({"enabled": True, "warm_new_symbols": False}, name="other")
    assert plugin.config is not None and plugin.config.warm_new_symbols is False
    manager.hook.before_scan(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    assert exchange.total == 0  # the setting took effect: new symbols are left to the scan
    metrics = manager.metrics()
    assert metrics and all(name.startswith("other.") for name in metrics)
    assert metrics["other.new_symbol_warms"] == 0
    manager.shutdown()
    assert manager.faults() == {}


def test_bad_config_stops_start_up_naming_the_key(start: Start) -> None:
    with pytest.raises(ConfigError, match=r"plugins\.warming\.top_k"):
        start({"top_k": "ten"})


def test_failing_exchange_never_reaches_the_loop(
    start: Start, cache: Any, clock: Any, exchange: Any, caplog: pytest.LogCaptureFixture
) -> None:
    manager, _ = start({"warm_threshold": 1})
    for symbol in SYMBOLS:
        cache.get_klines(symbol, "1m")
    manager.hook.on_scan_complete(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    exchange.fail = lambda key: True
    clock.advance(60)
    with caplog.at_level(logging.WARNING, logger="sltrader_warming"):
        manager.hook.on_candle_close(timeframe="1m", close_time=clock.now(), next_scan_time=0.0)
    # Handled inside the plugin: the manager saw no fault, the metric has all three.
    assert manager.faults() == {}
    assert manager.metrics()["warming.failures"] == 3
    assert "(metric warming.failures)" in caplog.text  # the name it was loaded under
    manager.shutdown()


def test_every_hook_is_a_no_op_before_on_start(clock: Any, exchange: Any) -> None:
    plugin = WarmingPlugin()
    signal = Signal(symbol="BTC_USDT", timeframe="1m", side="buy", probability=0.7, time=0.0)
    plugin.before_scan(SYMBOLS, "1m", clock.now())
    plugin.on_scan_complete(SYMBOLS, "1m", clock.now())
    plugin.on_signal(signal)
    plugin.on_candle_close("1m", clock.now(), clock.now() + 10)
    plugin.before_fetch_klines(KlineFetch("BTC_USDT", "5m", 10, clock.now()))
    assert plugin.report_metrics() is None
    plugin.on_shutdown()
    assert exchange.total == 0


def test_aside_it_prefetches_nothing_but_keeps_tracking(
    start: Start, cache: Any, clock: Any, exchange: Any
) -> None:
    manager, plugin = start({"warm_threshold": 1, "step_aside": True})
    assert plugin.payoff is not None and plugin.payoff.trials
    plugin.payoff.judge(False, "a trial found the trader's cycles no shorter")
    hook = manager.hook
    hook.before_scan(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    assert exchange.total == 0  # no symbol fetched ahead of the scan
    for symbol in SYMBOLS:
        cache.get_klines(symbol, "1m")
    hook.on_scan_complete(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    clock.advance(60)
    hook.on_candle_close(timeframe="1m", close_time=clock.now(), next_scan_time=clock.now() + 10)
    assert exchange.total == 3  # the scan's own reads only: nothing refreshed
    metrics = manager.metrics()
    assert metrics["warming.stepped_aside"] == 1 and metrics["warming.tracked_keys"] == 3
    plugin.payoff.judge(True, "a trial found it pays again")
    hook.on_candle_close(timeframe="1m", close_time=clock.now(), next_scan_time=clock.now() + 10)
    assert exchange.total == 3 + 3  # what it tracked while aside is warmed at once


def test_aside_its_main_loop_hooks_run_in_the_main_loop_and_active_on_its_thread(
    start: Start, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aside, a fast trader pays no hand-over to the plugin's thread for it."""
    manager, plugin = start({"step_aside": True})
    assert plugin.warmer is not None and plugin.payoff is not None
    seen: list[bool] = []
    record = plugin.warmer.record_signal

    def spy(*args: Any, **kwargs: Any) -> None:
        seen.append(threading.current_thread() is threading.main_thread())
        record(*args, **kwargs)

    monkeypatch.setattr(plugin.warmer, "record_signal", spy)
    signal = Signal(symbol="BTC_USDT", timeframe="1m", side="buy", probability=0.7, time=0.0)
    plugin.payoff.judge(False, "a trial found the trader's cycles no shorter")
    manager.hook.on_signal(signal=signal)
    plugin.payoff.judge(True, "a trial found it pays again")
    manager.hook.on_signal(signal=signal)
    assert seen == [True, False]


def test_its_trials_time_only_the_cycles_a_candle_closed_in(start: Start, clock: Any) -> None:
    """A trader scanning several times per candle: the scans between closes, where warming
    has nothing to prefetch, neither count in a trial nor move it on."""
    manager, plugin = start({"step_aside": True})
    assert plugin.payoff is not None
    hook = manager.hook
    for _ in range(20):  # no candle closes: the trial, once started, waits
        hook.on_scan_complete(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    assert plugin.payoff.counters().trials == 0
    for _ in range(6):  # a close before each scan: the trial's three pairs
        hook.on_candle_close(timeframe="1m", close_time=clock.now(), next_scan_time=clock.now())
        hook.on_scan_complete(symbols=SYMBOLS, timeframe="1m", now=clock.now())
    assert plugin.payoff.counters().trials == 1
