from __future__ import annotations

import threading

import numpy as np
import pytest

from sltrader_plugins.host.exchange import (
    ExchangeError,
    MarketConfig,
    RateLimitExceeded,
    ReplayExchange,
    SimClock,
    UnknownSymbolError,
)
from sltrader_plugins.timeframes import last_close_time


def test_klines_are_float64_readonly_and_closed(exchange, clock):
    k = exchange.fetch_klines("BTC_USDT", "1m", 600)
    assert len(k) == 600
    for array in (k.open_time, k.open, k.high, k.low, k.close, k.volume):
        assert array.dtype == np.float64 and not array.flags.writeable
    assert k.last_close_time == last_close_time("1m", clock.now())
    assert (k.high >= np.maximum(k.open, k.close)).all()
    assert (k.low <= np.minimum(k.open, k.close)).all()


@pytest.mark.parametrize("timeframe", ["1m", "5m", "15m", "1h"])
def test_no_look_ahead_at_any_instant(exchange, clock, timeframe):
    for _ in range(30):
        clock.advance(37.0)
        k = exchange.fetch_klines("ETH/USDT", timeframe, 10)
        assert k.last_close_time <= clock.now()
        assert k.last_close_time == last_close_time(timeframe, clock.now())


def test_candle_closing_exactly_now_is_served(exchange, clock):
    boundary = last_close_time("5m", clock.now()) + 300
    clock.advance(boundary - clock.now())
    assert exchange.fetch_klines("BTC_USDT", "5m", 3).last_close_time == boundary


def test_deterministic_per_seed_and_symbol(market, clock):
    a = ReplayExchange(market, ["BTC_USDT", "ETH/USDT"], clock)
    b = ReplayExchange(market, ["ETH/USDT", "X", "BTC_USDT"], clock)  # other listing
    for symbol in ("BTC_USDT", "ETH/USDT"):
        np.testing.assert_array_equal(
            a.fetch_klines(symbol, "1m", 100).close, b.fetch_klines(symbol, "1m", 100).close
        )
    other = MarketConfig(seed=4, start=market.start, history_s=market.history_s, horizon_s=60)
    c = ReplayExchange(other, ["BTC_USDT"], clock)
    assert not np.array_equal(
        a.fetch_klines("BTC_USDT", "1m", 100).close, c.fetch_klines("BTC_USDT", "1m", 100).close
    )


def test_higher_timeframes_aggregate_the_base(exchange):
    base = exchange.fetch_klines("SOL_USDT", "1m", 600)
    five = exchange.fetch_klines("SOL_USDT", "5m", 10)
    assert five.open_time[-1] % 300 == 0
    i = int(np.searchsorted(base.open_time, five.open_time[-1]))
    np.testing.assert_array_equal(five.close[-1], base.close[i + 4])
    assert five.high[-1] == base.high[i : i + 5].max()
    assert five.volume[-1] == pytest.approx(base.volume[i : i + 5].sum())


def test_unknown_symbol_and_bad_requests(exchange):
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        exchange.fetch_klines("NOPE", "1m", 10)
    with pytest.raises(ExchangeError, match="limit"):
        exchange.fetch_klines("BTC_USDT", "1m", 0)
    with pytest.raises(ExchangeError, match="whole number"):
        exchange.fetch_klines("BTC_USDT", "30s", 10)


def test_replay_end_is_an_error(exchange, clock, market):
    clock.advance(market.horizon_s + 60)
    with pytest.raises(ExchangeError, match="replay ends"):
        exchange.fetch_klines("BTC_USDT", "1m", 10)


def test_rate_limit_per_simulated_minute(market, clock):
    ex = ReplayExchange(market, ["BTC_USDT"], clock, rate_limit_per_min=3)
    for _ in range(3):
        ex.fetch_klines("BTC_USDT", "1m", 5)
    with pytest.raises(RateLimitExceeded, match="more than 3 requests"):
        ex.fetch_klines("BTC_USDT", "1m", 5)
    clock.advance(60)
    ex.fetch_klines("BTC_USDT", "1m", 5)
    assert ex.requests == 5


def test_latency_is_slept(market, clock):
    ex = ReplayExchange(market, ["BTC_USDT"], clock, latency_s=0.01, jitter=0.5)
    import time

    start = time.perf_counter()
    ex.fetch_klines("BTC_USDT", "1m", 5)
    assert time.perf_counter() - start >= 0.005


def test_top_symbols_ranked_and_rotating(market, clock):
    names = [f"S{i}_USDT" for i in range(40)]
    ex = ReplayExchange(market, names, clock)
    first = ex.top_symbols(20)
    assert len(first) == 20 and len(set(first)) == 20
    assert ex.top_symbols(20) == first  # deterministic
    clock.advance(2 * 3600)
    later = ex.top_symbols(20)
    assert 0 < len(set(later) - set(first)) <= 10  # some churn, not a reshuffle


def test_concurrent_generation_is_consistent(market, clock):
    ex = ReplayExchange(market, ["BTC_USDT"], clock)
    out = []

    def fetch():
        out.append(ex.fetch_klines("BTC_USDT", "15m", 50).close)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(out[0], o) for o in out)


def test_clock_cannot_go_back():
    clock = SimClock(100.0)
    assert clock.advance(5) == 105.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_duplicate_symbols_refused(market, clock):
    with pytest.raises(ValueError):
        ReplayExchange(market, ["A", "A"], clock)
