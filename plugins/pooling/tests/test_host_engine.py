"""Against the reference host's FeatureEngine (skipped where the host is not installed).

The host's engine is the single source of the maths; these tests check that serving
its buffers from the pool changes nothing, bit for bit, on the replay exchange's real
series and on random ones, from many threads at once, and that a build that raises
returns its buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sltrader_plugins import HostServices, Klines, Plugins, PluginSettings, hookimpl
from sltrader_plugins.manager import PluginManager
from sltrader_pooling import PoolingPlugin

features = pytest.importorskip("sltrader_plugins.host.features")
exchange = pytest.importorskip("sltrader_plugins.host.exchange")

SYMBOLS = ["BTC_USDT", "ETH/USDT", "SOL-PERP", "DOGE_USDT", "XRP/BTC", "ADA-USD"]
START = 1_700_000_040.0


Start = Callable[..., tuple[PluginManager, PoolingPlugin]]


def pooled_manager(start: Start, **section: Any) -> PluginManager:
    manager, _ = start(section)
    return manager


def replay() -> Any:
    clock = exchange.SimClock(START)
    market = exchange.MarketConfig(seed=11, start=START, history_s=5 * 86400, horizon_s=3600)
    return exchange.ReplayExchange(market, SYMBOLS, clock)


def random_klines(seed: int, n: int, symbol: str = "RND_USDT") -> Any:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.004, n)) * close
    volume = rng.lognormal(3.0, 1.0, n)
    ro = np.ascontiguousarray
    return Klines(
        symbol=symbol,
        timeframe="1m",
        open_time=ro(START - 60.0 * np.arange(n, 0, -1)),
        open=ro(np.roll(close, 1)),
        high=ro(close + spread),
        low=ro(close - spread),
        close=ro(close),
        volume=ro(volume),
    )


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("poison", [False, True])
def test_real_series_are_bit_identical(start: Start, poison: bool) -> None:
    ex = replay()
    manager = pooled_manager(start, poison=poison)
    plain = features.FeatureEngine()
    pooled = features.FeatureEngine(Plugins(manager))
    series = [
        ex.fetch_klines(symbol, timeframe, limit)
        for symbol in SYMBOLS
        for timeframe, limit in (("1m", 600), ("1m", 777), ("5m", 520), ("15m", 500))
    ]
    for _ in range(2):  # the second round runs on reused, dirty buffers
        for klines in series:
            expected = plain.build(klines.symbol, klines.timeframe, klines)
            got = pooled.build(klines.symbol, klines.timeframe, klines)
            assert same_bits(got, expected), (klines.symbol, klines.timeframe, len(klines))
    metrics = manager.metrics()
    assert metrics["pooling.outstanding"] == 0
    assert metrics["pooling.hits"] > metrics["pooling.misses"]
    assert manager.faults() == {}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), n=st.integers(500, 1300))
def test_random_series_are_bit_identical(start: Start, seeds: list[int], n: int) -> None:
    manager = pooled_manager(start)
    plain = features.FeatureEngine()
    pooled = features.FeatureEngine(Plugins(manager))
    # Lengths change from build to build: buffers are taken across lengths of a class.
    for i, seed in enumerate(seeds):
        klines = random_klines(seed, n + 37 * i)
        expected = plain.build(klines.symbol, "1m", klines)
        assert same_bits(pooled.build(klines.symbol, "1m", klines), expected)


class SharingCheck:
    """Wraps the pooling plugin's buffers: records every array a build holds and fails
    when a concurrent build is handed memory another build still holds."""

    def __init__(self, inner: PoolingPlugin) -> None:
        self.inner = inner
        self.guard = threading.Lock()
        self.owner: dict[tuple[int, int], int] = {}
        self.errors: list[str] = []

    @hookimpl
    def on_feature_build(self, symbol: str, timeframe: str, n_candles: int) -> Any:
        return _Checked(self, self.inner.on_feature_build(symbol, timeframe, n_candles))


class _Checked:
    def __init__(self, check: SharingCheck, inner: Any) -> None:
        self.check = check
        self.inner = inner
        self.held: list[tuple[int, int]] = []

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        array = self.inner.empty(n, dtype)
        start = array.__array_interface__["data"][0]
        span = (start, start + array.nbytes)
        with self.check.guard:
            for (lo, hi), owner in self.check.owner.items():
                if span[0] < hi and lo < span[1] and owner != id(self):
                    self.check.errors.append(f"memory of a live build handed out again ({n})")
            self.check.owner[span] = id(self)
        self.held.append(span)
        return array

    def release(self) -> None:
        with self.check.guard:
            for span in self.held:
                self.check.owner.pop(span, None)
        self.inner.release()


def test_many_threads_build_at_once(services: Callable[..., HostServices], in_threads) -> None:
    ex = replay()
    plugin = PoolingPlugin()
    plugin.on_start(services(), PluginSettings("pooling"))
    check = SharingCheck(plugin)
    manager = PluginManager()
    manager.register(check, "check")
    plain = features.FeatureEngine()
    pooled = features.FeatureEngine(Plugins(manager))
    series = [ex.fetch_klines(s, tf, 600) for s in SYMBOLS for tf in ("1m", "5m")]
    expected = [plain.build(k.symbol, k.timeframe, k) for k in series]
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(60):
            j = (offset + i) % len(series)
            k = series[j]
            if not same_bits(pooled.build(k.symbol, k.timeframe, k), expected[j]):
                errors.append(f"{k.symbol} {k.timeframe} differs")

    in_threads(work, 8)
    assert errors == []
    assert check.errors == []
    assert plugin.pool is not None
    stats = plugin.pool.stats()
    assert stats.outstanding == 0
    assert stats.builds == 8 * 60
    assert stats.created <= 8
    assert manager.faults() == {}


def test_a_failing_build_returns_its_buffers(start: Start) -> None:
    manager = pooled_manager(start)
    pooled = features.FeatureEngine(Plugins(manager))
    good = random_klines(1, 600)
    pooled.build("OK", "1m", good)
    bad_close = good.close.copy()
    bad_close[-3] = np.nan  # passes the length check, fails inside the build
    bad = Klines(
        symbol="NAN_USDT",
        timeframe="1m",
        open_time=good.open_time,
        open=good.open,
        high=good.high,
        low=good.low,
        close=bad_close,
        volume=good.volume,
    )
    for _ in range(5):
        with pytest.raises(features.FeatureError):
            pooled.build("NAN_USDT", "1m", bad)
    metrics = manager.metrics()
    assert metrics["pooling.outstanding"] == 0
    assert metrics["pooling.builds"] == 6
