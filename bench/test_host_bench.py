"""Micro-benchmarks of the reference host's hot paths (``pytest bench/test_host_bench.py``).

One feature build (default buffers), a cache hit, and one prediction of each model; the
scenario comparison of plugin sets is ``sltrader bench``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("sklearn")

import numpy as np

from sltrader_plugins import SingleFlightCache
from sltrader_plugins.host.exchange import MarketConfig, ReplayExchange, SimClock
from sltrader_plugins.host.features import FeatureEngine
from sltrader_plugins.host.loop import START
from sltrader_plugins.host.model import make_model


@pytest.fixture(scope="module")
def market():
    clock = SimClock(START + 5.0)
    config = MarketConfig(seed=1, start=clock.now(), history_s=64 * 3600.0, horizon_s=600.0)
    exchange = ReplayExchange(config, ["BTC_USDT"], clock)
    return clock, exchange


def test_feature_build(benchmark, market):
    _, exchange = market
    klines = exchange.fetch_klines("BTC_USDT", "1m", 600)
    engine = FeatureEngine()
    benchmark(engine.build, "BTC_USDT", "1m", klines)


def test_cache_hit(benchmark, market):
    clock, exchange = market
    cache = SingleFlightCache(exchange.fetch_klines, clock, 16)
    cache.get_klines("BTC_USDT", "1m")
    benchmark(cache.get_klines, "BTC_USDT", "1m")


@pytest.mark.parametrize("kind", ["sgd", "cheap"])
def test_predict(benchmark, kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 28))
    model = make_model(kind, 0)
    model.learn(x, (x[:, 0] > 0).astype(int))
    benchmark(model.predict, x[0])
