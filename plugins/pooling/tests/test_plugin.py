"""The plugin through the core's real PluginManager, and its configuration."""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import ConfigError, FeatureBuffers, HostServices, PluginSettings
from sltrader_plugins.buffers import LentBuffers
from sltrader_plugins.manager import PluginManager
from sltrader_pooling import PoolingConfig, PoolingPlugin

Services = Callable[..., HostServices]
Start = Callable[..., tuple[PluginManager, PoolingPlugin]]


def test_entry_point_names_the_plugin_class() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="sltrader") if ep.name == "pooling"]
    assert ep.load() is PoolingPlugin


def test_builds_through_the_hook(start: Start, build: Callable[..., np.ndarray]) -> None:
    manager, _ = start()
    rng = np.random.default_rng(1)
    close = 100 + np.cumsum(rng.normal(size=500))
    for _ in range(5):
        buffers = manager.hook.on_feature_build(symbol="BTC_USDT", timeframe="1m", n_candles=500)
        assert isinstance(buffers, FeatureBuffers)
        # The host sees the pool's buffers through the manager's guard, blaming this plugin.
        assert isinstance(buffers, LentBuffers) and buffers.plugin == "pooling"
        build(close, close + 1, close - 1, buffers)
    metrics = manager.metrics()
    assert metrics["pooling.builds"] == 5
    assert metrics["pooling.outstanding"] == 0
    assert metrics["pooling.misses"] > 0
    assert metrics["pooling.hits"] == 4 * metrics["pooling.misses"]
    assert metrics["pooling.hit_rate"] == pytest.approx(0.8)
    assert 0 < metrics["pooling.idle_bytes"] <= metrics["pooling.max_idle_bytes"]
    assert all(name.startswith("pooling.") and math.isfinite(v) for name, v in metrics.items())
    assert {"pooling.hits", "pooling.misses", "pooling.outstanding", "pooling.idle_bytes"} <= set(
        metrics
    )
    assert manager.faults() == {}


def test_metrics_before_any_build(start: Start) -> None:
    manager, _ = start()
    assert manager.metrics()["pooling.hit_rate"] == 0.0


def test_metrics_are_reported_unprefixed(start: Start) -> None:
    _, plugin = start()
    metrics = plugin.report_metrics()
    assert metrics is not None and "hits" in metrics
    assert not any("." in name for name in metrics)


def test_default_idle_bound_follows_the_workers(services: Services) -> None:
    plugin = PoolingPlugin()
    plugin.on_start(services(workers=3), PluginSettings("pooling"))
    assert plugin.pool is not None and plugin.pool.max_idle_builds == 4
    plugin.on_start(
        services(), PluginSettings("pooling", {"max_idle_builds": 2, "max_idle_bytes": 1000})
    )
    assert plugin.pool.max_idle_builds == 2
    assert plugin.pool.max_bytes_per_build == 500


def test_works_unchanged_under_another_name(start: Start, build: Callable[..., np.ndarray]) -> None:
    # "enabled" is the manager's: the plugin never sees it, so it is no unknown key.
    manager, plugin = start({"enabled": True, "max_idle_builds": 2}, name="other")
    assert plugin.pool is not None and plugin.pool.max_idle_builds == 2
    close = 100 + np.cumsum(np.random.default_rng(2).normal(size=500))
    buffers = manager.hook.on_feature_build(symbol="BTC_USDT", timeframe="1m", n_candles=500)
    build(close, close + 1, close - 1, buffers)
    metrics = manager.metrics()
    assert metrics and all(name.startswith("other.") for name in metrics)
    assert metrics["other.builds"] == 1
    assert manager.faults() == {}
    manager.shutdown()


def test_before_start_answers_nothing() -> None:
    plugin = PoolingPlugin()
    assert plugin.on_feature_build(symbol="X", timeframe="1m", n_candles=10) is None
    assert plugin.report_metrics() is None
    plugin.on_shutdown()


def test_shutdown_logs_leaked_builds(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    manager, _ = start()
    leaked = manager.hook.on_feature_build(symbol="ETH/USDT", timeframe="5m", n_candles=700)
    leaked.empty(700)
    manager.hook.on_feature_build(symbol="OK", timeframe="1m", n_candles=1).release()
    with caplog.at_level(logging.WARNING):
        manager.shutdown()
    assert "1 build(s) acquired buffers and never released them" in caplog.text
    assert "ETH/USDT 5m n=700" in caplog.text


def test_clean_shutdown_logs_no_warning(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    manager, _ = start()
    manager.hook.on_feature_build(symbol="OK", timeframe="1m", n_candles=1).release()
    with caplog.at_level(logging.WARNING):
        manager.shutdown()
    assert caplog.text == ""


def test_restart_drops_the_old_pool(services: Services) -> None:
    plugin = PoolingPlugin()
    plugin.on_start(services(), PluginSettings("pooling"))
    first = plugin.pool
    plugin.on_start(services(), PluginSettings("pooling"))
    assert plugin.pool is not first


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_idle_bytes": -1}, "max_idle_bytes"),
        ({"max_idle_bytes": "lots"}, "plugins.pooling.max_idle_bytes"),
        ({"max_idle_builds": -2}, "max_idle_builds"),
        ({"max_pooled_bytes": 1.5}, "plugins.pooling.max_pooled_bytes"),
        ({"max_pooled_bytes": 0}, "max_pooled_bytes"),
        ({"poison": "yes"}, "plugins.pooling.poison"),
        ({"max_idle_byte": 10}, "max_idle_byte"),
    ],
)
def test_config_errors_name_the_key(start: Start, section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        start(section)
    assert "plugins.pooling" in str(info.value)


def test_config_defaults() -> None:
    config = PluginSettings("pooling").parse(PoolingConfig)
    assert config == PoolingConfig() and config.max_idle_builds is None
    assert config.max_pooled_bytes == 8 << 20


def test_aside_it_lends_nothing_and_says_so_in_its_counters(start: Start) -> None:
    manager, plugin = start({"step_aside": True})
    assert plugin.payoff is not None and plugin.payoff.trials
    plugin.payoff.judge(False, "a trial found the host's own arrays faster")
    assert manager.hook.on_feature_build(symbol="X", timeframe="1m", n_candles=50) is None
    metrics = manager.metrics()
    assert metrics["pooling.stepped_aside"] == 1 and metrics["pooling.builds"] == 0
    plugin.payoff.judge(True, "a trial found it pays again")
    assert manager.hook.on_feature_build(symbol="X", timeframe="1m", n_candles=50) is not None
