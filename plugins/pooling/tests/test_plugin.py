"""The plugin through the core's real PluginManager, and its configuration."""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import ConfigError, FeatureBuffers, HostServices
from sltrader_plugins.manager import PluginManager
from sltrader_pooling import BuildBuffers, PoolingConfig, PoolingPlugin

Services = Callable[..., HostServices]


def started(services: Services, section: dict[str, Any] | None = None) -> PluginManager:
    manager = PluginManager()
    manager.register(PoolingPlugin(), "pooling")
    manager.start(services(section))
    return manager


def test_entry_point_names_the_plugin_class() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="sltrader") if ep.name == "pooling"]
    assert ep.load() is PoolingPlugin


def test_builds_through_the_hook(services: Services, build: Callable[..., np.ndarray]) -> None:
    manager = started(services)
    rng = np.random.default_rng(1)
    close = 100 + np.cumsum(rng.normal(size=500))
    for _ in range(5):
        buffers = manager.hook.on_feature_build(symbol="BTC_USDT", timeframe="1m", n_candles=500)
        assert isinstance(buffers, FeatureBuffers)
        assert isinstance(buffers, BuildBuffers)
        build(close, close + 1, close - 1, buffers)
    (metrics,) = manager.hook.report_metrics()
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


def test_metrics_before_any_build(services: Services) -> None:
    (metrics,) = started(services).hook.report_metrics()
    assert metrics["pooling.hit_rate"] == 0.0


def test_default_idle_bound_follows_the_workers(services: Services) -> None:
    plugin = PoolingPlugin()
    plugin.on_start(services(None, workers=3))
    assert plugin.pool is not None and plugin.pool.max_idle_builds == 4
    plugin.on_start(services({"max_idle_builds": 2, "max_idle_bytes": 1000}))
    assert plugin.pool.max_idle_builds == 2
    assert plugin.pool.max_bytes_per_build == 500


def test_disabled_answers_nothing(services: Services) -> None:
    manager = started(services, {"enabled": False})
    assert manager.hook.on_feature_build(symbol="X", timeframe="1m", n_candles=500) is None
    assert manager.hook.report_metrics() == []
    manager.shutdown()


def test_before_start_answers_nothing() -> None:
    plugin = PoolingPlugin()
    assert plugin.on_feature_build(symbol="X", timeframe="1m", n_candles=10) is None
    assert plugin.report_metrics() is None
    plugin.on_shutdown()


def test_shutdown_logs_leaked_builds(services: Services, caplog: pytest.LogCaptureFixture) -> None:
    manager = started(services)
    leaked = manager.hook.on_feature_build(symbol="ETH/USDT", timeframe="5m", n_candles=700)
    leaked.empty(700)
    manager.hook.on_feature_build(symbol="OK", timeframe="1m", n_candles=1).release()
    with caplog.at_level(logging.WARNING):
        manager.shutdown()
    assert "1 object(s) acquired and never released" in caplog.text
    assert "ETH/USDT 5m n=700" in caplog.text


def test_clean_shutdown_logs_no_warning(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    manager = started(services)
    manager.hook.on_feature_build(symbol="OK", timeframe="1m", n_candles=1).release()
    with caplog.at_level(logging.WARNING):
        manager.shutdown()
    assert caplog.text == ""


def test_restart_drops_the_old_pool(services: Services) -> None:
    plugin = PoolingPlugin()
    plugin.on_start(services())
    first = plugin.pool
    plugin.on_start(services())
    assert plugin.pool is not first


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"max_idle_bytes": -1}, "max_idle_bytes"),
        ({"max_idle_bytes": "lots"}, "plugins.pooling.max_idle_bytes"),
        ({"max_idle_builds": -2}, "max_idle_builds"),
        ({"min_pooled_bytes": 1.5}, "plugins.pooling.min_pooled_bytes"),
        ({"max_pooled_bytes": 0}, "max_pooled_bytes"),
        ({"min_pooled_bytes": 4096, "max_pooled_bytes": 1024}, "max_pooled_bytes"),
        ({"classes_per_doubling": 3}, "classes_per_doubling"),
        ({"poison": "yes"}, "plugins.pooling.poison"),
        ({"max_idle_byte": 10}, "max_idle_byte"),
    ],
)
def test_config_errors_name_the_key(services: Services, section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        started(services, section)
    assert "plugins.pooling" in str(info.value)


def test_config_defaults() -> None:
    config = PoolingConfig.from_section({})
    assert config.enabled and config.max_idle_builds is None
    assert config.max_pooled_bytes > config.min_pooled_bytes
