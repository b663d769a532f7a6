"""Faults around pooled builds, through the trader's call site (``Plugins.build_features``).

A build that raises half-way, from many threads at once, returns every buffer it took and
blames neither the pool nor the data wrongly; slow builds in many threads never share a
buffer. (Every hook of the plugin raising, answering the wrong type or hanging is the
core's fault suite: tests/host/test_faults.py.)
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sltrader_plugins import FeatureBuffers, Plugins

WORKERS = 16
BUILDS = 400


class DataError(ValueError):
    """The trader's own error for a series it cannot use."""


def compute(close: np.ndarray, fail: bool, pause: float, buffers: FeatureBuffers) -> np.ndarray:
    """A small build in the documented shape: temporaries from ``buffers``, a fresh result."""
    n = len(close)
    ret = buffers.empty(n - 1)
    np.divide(close[1:], close[:-1], out=ret)
    np.log(ret, out=ret)
    sq = buffers.empty(n - 1)
    np.multiply(ret, ret, out=sq)
    if fail:
        raise DataError("a NaN half-way through the series")
    if pause:
        time.sleep(pause)  # another build runs meanwhile: a shared buffer would show
    return np.array([ret[-1], sq[-20:].mean(), float(ret.sum())])


def started(start) -> tuple[Plugins, object]:
    manager, _ = start(workers=WORKERS)
    return Plugins(manager), manager


def run_builds(plugins: Plugins, pause: float, every: int) -> list[object]:
    rng = np.random.default_rng(3)
    closes = [100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))) for _ in range(8)]

    def one(i: int) -> object:
        close, fail = closes[i % len(closes)], every and i % every == 0
        try:
            return plugins.build_features(
                f"S_{i % 8}",
                "1m",
                len(close),
                compute,
                close,
                fail,
                pause,
                data_errors=(DataError,),
            )
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, range(BUILDS)))


def expected(i: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    closes = [100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))) for _ in range(8)]
    return compute(closes[i % 8], False, 0.0, _Plain())


class _Plain:
    def empty(self, n, dtype=np.float64):
        return np.empty(n, dtype)

    def release(self) -> None:
        return None


def test_builds_raising_half_way_return_every_buffer(start) -> None:
    plugins, manager = started(start)
    results = run_builds(plugins, pause=0.0, every=7)
    failed = [i for i, r in enumerate(results) if isinstance(r, DataError)]
    assert failed == [i for i in range(BUILDS) if i % 7 == 0]
    for i, result in enumerate(results):
        if i % 7:
            np.testing.assert_array_equal(result, expected(i))
    metrics = manager.metrics()
    assert metrics["pooling.outstanding"] == 0
    assert metrics["pooling.builds"] == BUILDS
    assert metrics["pooling.buffer_sets_created"] <= WORKERS + 1
    assert manager.faults() == {}  # the data's error, never the pool's


@pytest.mark.parametrize("pause", [0.0005])
def test_slow_builds_in_many_threads_never_share_a_buffer(start, pause) -> None:
    plugins, manager = started(start)
    results = run_builds(plugins, pause=pause, every=0)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, expected(i))
    assert manager.metrics()["pooling.outstanding"] == 0
    assert manager.faults() == {}
