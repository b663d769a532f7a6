"""Fixtures for the pooling plugin's tests: a stand-in feature build, host services,
and the plugin started through a real ``PluginManager``.

The stand-in computes a realistic indicator set through the ``FeatureBuffers`` interface
(every intermediate from ``buffers.empty`` and numpy's ``out=``), the way the host's
engine does, so the plugin is tested without the reference host installed. Where the
host's ``FeatureEngine`` is importable, ``test_equivalence`` runs against it too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import Config, FeatureBuffers, HostServices
from sltrader_plugins.manager import PluginManager
from sltrader_plugins.protocols import CacheStats
from sltrader_pooling import PoolingPlugin


class PlainBuffers:
    """The plugin-free ``FeatureBuffers``: a fresh ``np.empty`` per request."""

    def __init__(self) -> None:
        self.released = 0

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        return np.empty(n, dtype)

    def release(self) -> None:
        self.released += 1


def _ema(values: np.ndarray, span: int, out: np.ndarray) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    out[0] = values[0]
    for i in range(1, len(values)):  # short loop over a small window in the tests only
        out[i] = alpha * values[i] + (1.0 - alpha) * out[i - 1]
    return out


def build_features(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, buffers: FeatureBuffers
) -> np.ndarray:
    """A feature vector from one series, every intermediate from ``buffers``.

    Releases ``buffers`` exactly once (also when it raises) and returns its own copy.
    """
    n = len(close)
    try:
        csum = buffers.empty(n + 1)
        csum[0] = 0.0
        np.cumsum(close, out=csum[1:])
        features = []
        for window in (5, 20, 50):
            sma = buffers.empty(n - window + 1)
            np.subtract(csum[window:], csum[:-window], out=sma)
            np.divide(sma, window, out=sma)
            features.append(sma[-1] / close[-1] - 1.0)
        ret = buffers.empty(n - 1)
        np.divide(close[1:], close[:-1], out=ret)
        np.log(ret, out=ret)
        features.append(float(ret[-20:].std()))
        diff = buffers.empty(n - 1)
        np.subtract(close[1:], close[:-1], out=diff)
        gain = buffers.empty(n - 1)
        np.maximum(diff, 0.0, out=gain)
        loss = buffers.empty(n - 1)
        np.minimum(diff, 0.0, out=loss)
        np.negative(loss, out=loss)
        g = gain[-14:].mean()
        lo = loss[-14:].mean()
        features.append(100.0 - 100.0 / (1.0 + g / lo) if lo else 100.0)
        tr = buffers.empty(n - 1)
        np.subtract(high[1:], low[1:], out=tr)
        tmp = buffers.empty(n - 1)
        np.subtract(high[1:], close[:-1], out=tmp)
        np.abs(tmp, out=tmp)
        np.maximum(tr, tmp, out=tr)
        np.subtract(low[1:], close[:-1], out=tmp)
        np.abs(tmp, out=tmp)
        np.maximum(tr, tmp, out=tr)
        features.append(tr[-14:].mean() / close[-1])
        ema = _ema(close[-60:], 12, buffers.empty(60))
        ema_slow = _ema(close[-60:], 26, buffers.empty(60))
        features.append((ema[-1] - ema_slow[-1]) / close[-1])
        flags = buffers.empty(n - 1, np.bool_)
        np.greater(diff, 0.0, out=flags)
        features.append(float(flags[-20:].mean()))
        counts = buffers.empty(n, np.int64)
        counts[:] = 1
        features.append(float(counts.sum()) / n)
        return np.array(features, dtype=np.float64)
    finally:
        buffers.release()


def random_series(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.005, n)) * close
    return close, close + spread, close - spread


class _Model:
    def predict(self, features: np.ndarray) -> float:
        return float(features.sum())


class _Cache:
    def prefetch(self, symbol: str, timeframe: str) -> bool:
        return False

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        return None

    def stats(self) -> CacheStats:
        return CacheStats()


class _Clock:
    def now(self) -> float:
        return 0.0


def make_services(workers: int = 8) -> HostServices:
    return HostServices(
        model=_Model(),
        cache=_Cache(),
        clock=_Clock(),
        base_timeframe="1m",
        confirm_timeframes=("5m", "15m", "1h"),
        workers=workers,
    )


def start_plugin(
    section: dict[str, Any] | None = None, *, name: str = "pooling", workers: int = 8
) -> tuple[PluginManager, PoolingPlugin]:
    """The plugin registered as ``name`` and started with ``section`` as its settings."""
    manager = PluginManager()
    manager.config = Config.from_mapping(
        {"plugins": {name: {"step_aside": False, **(section or {})}}}
    )
    plugin = PoolingPlugin()
    manager.register(plugin, name)
    manager.start(make_services(workers))
    return manager, plugin


@pytest.fixture
def services() -> Callable[..., HostServices]:
    return make_services


@pytest.fixture
def start() -> Callable[..., tuple[PluginManager, PoolingPlugin]]:
    return start_plugin


@pytest.fixture
def build() -> Callable[..., np.ndarray]:
    return build_features


@pytest.fixture
def series() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return random_series


@pytest.fixture
def plain() -> type[PlainBuffers]:
    return PlainBuffers


@pytest.fixture
def in_threads() -> Callable[[Callable[[int], None], int], None]:
    """Run ``work(i)`` in ``n`` threads at once and wait for all of them."""

    def run(work: Callable[[int], None], n: int) -> None:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run
