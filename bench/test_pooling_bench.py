"""Benchmarks of the pooling plugin (``pytest bench/test_pooling_bench.py``).

- build time of one host feature build, plugin-free vs pooled vs the *floor*
  (``bench/floor/sltrader_floor.py``: buffers that cost nothing, the fastest any buffer
  plugin can make a build through ``on_feature_build``); one thread, and 8 threads at
  once (thread CPU time per build, as the host's scan measures it);
- gross allocation per build (bytes and blocks, the host's own probe), in
  ``extra_info`` of the same tests' JSON (``--benchmark-json``);
- one ``empty`` request by array size, pooled hit vs ``np.empty``;
- the pool's acquire + 30 hits + release per build with 8 threads at once.

The scenario comparison (``none`` vs ``pooling`` on the reference workload) is
``sltrader bench --sets none,pooling``.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import HostServices, Plugins
from sltrader_plugins.manager import PluginManager
from sltrader_pooling import BufferPool, BuildBuffers, PoolingConfig, PoolingPlugin

sys.path.insert(0, str(Path(__file__).parent / "floor"))  # an experiment, not installed
from sltrader_floor import FloorPlugin

pytest.importorskip("pytest_benchmark")
features = pytest.importorskip("sltrader_plugins.host.features")
allocations = pytest.importorskip("sltrader_plugins.host.allocations")
exchange = pytest.importorskip("sltrader_plugins.host.exchange")

START = 1_700_000_040.0
WORKERS = 8


def _services() -> HostServices:
    # The pooling plugin reads only the worker count (its settings come from the manager).
    return HostServices(None, None, None, "1m", WORKERS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def klines() -> Any:
    clock = exchange.SimClock(START)
    config = exchange.MarketConfig(seed=1, start=START, history_s=64 * 3600.0, horizon_s=600.0)
    replay = exchange.ReplayExchange(config, ["BTC_USDT"], clock)
    return replay.fetch_klines("BTC_USDT", "1m", 600)


def _engine(kind: str) -> Any:
    return _engine_and_manager(kind)[0]


def _engine_and_manager(kind: str) -> tuple[Any, PluginManager]:
    manager = PluginManager()
    if kind == "pooling":
        manager.register(PoolingPlugin(), "pooling")
        manager.start(_services())
    elif kind == "floor":
        manager.register(FloorPlugin(), "floor")
    # Every kind through the same call site, so only the buffers differ.
    return features.FeatureEngine(Plugins(manager)), manager


@pytest.fixture(scope="module")
def expected(klines: Any) -> np.ndarray:
    """The plugin-free build's features: every kind must compute exactly these."""
    return _engine("none").build("BTC_USDT", "1m", klines)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def plain_allocation(klines: Any) -> Any:
    """Gross allocation of a plugin-free build, what pooling is measured against."""
    engine = _engine("none")
    for _ in range(20):
        engine.build("BTC_USDT", "1m", klines)
    return allocations.measure(lambda: engine.build("BTC_USDT", "1m", klines), repeat=20)


def test_floor_is_exact(klines: Any) -> None:
    """The floor computes the same features (else its time would mean nothing)."""
    expected = _engine("none").build("BTC_USDT", "1m", klines)
    floor = _engine("floor")
    for _ in range(3):
        assert np.array_equal(floor.build("BTC_USDT", "1m", klines), expected)


@pytest.mark.parametrize("kind", ["none", "pooling", "floor"])
def test_feature_build(
    benchmark: Any, klines: Any, kind: str, expected: np.ndarray, plain_allocation: Any
) -> None:
    engine, manager = _engine_and_manager(kind)
    for _ in range(20):  # warm: the pool fills, the layout is built
        engine.build("BTC_USDT", "1m", klines)
    allocation = allocations.measure(lambda: engine.build("BTC_USDT", "1m", klines), repeat=20)
    benchmark.extra_info["alloc_bytes_per_build"] = allocation.bytes
    benchmark.extra_info["alloc_blocks_per_build"] = allocation.blocks
    benchmark.extra_info["alloc_peak_bytes"] = allocation.peak
    warm = manager.metrics()
    features = benchmark(engine.build, "BTC_USDT", "1m", klines)
    assert np.array_equal(features, expected)  # buffers change where arrays live, not values
    if kind != "none":
        # About 6 KB against 116 KB per build on the development machine: a pool that
        # stopped reusing its buffers would allocate what the plain build does.
        assert allocation.bytes < plain_allocation.bytes / 4, (allocation, plain_allocation)
    if kind == "pooling":
        # Warm, every poolable request is a hit: the benchmarked builds allocated nothing.
        after = manager.metrics()
        assert after["pooling.misses"] == warm["pooling.misses"]
        assert after["pooling.hits"] > warm["pooling.hits"]
        assert after["pooling.outstanding"] == 0


@pytest.mark.parametrize("kind", ["none", "pooling", "floor"])
def test_feature_build_8_threads(
    benchmark: Any, klines: Any, kind: str, expected: np.ndarray
) -> None:
    """Thread CPU time per build with 8 threads building at once (the scan's metric)."""
    engine = _engine(kind)
    builds = 300
    wrong: list[np.ndarray] = []

    def run() -> float:
        spent: list[float] = []

        def work() -> None:
            start = time.thread_time()
            for _ in range(builds):
                features = engine.build("BTC_USDT", "1m", klines)
            spent.append(time.thread_time() - start)
            # Buffers shared between concurrent builds would corrupt each other's features.
            if not np.array_equal(features, expected):
                wrong.append(features)

        threads = [threading.Thread(target=work) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(spent) / (WORKERS * builds)

    cpu: list[float] = []
    benchmark.pedantic(lambda: cpu.append(run()), rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["thread_cpu_per_build_median"] = sorted(cpu)[len(cpu) // 2]
    assert all(value > 0 for value in cpu)
    assert wrong == []


@pytest.mark.parametrize("n", [1, 16, 128, 512, 4096, 65536])
@pytest.mark.parametrize("kind", ["np.empty", "pooled"])
def test_empty_by_size(benchmark: Any, kind: str, n: int) -> None:
    """32 requests of ``n`` float64 per build, written once (as a build would)."""
    pool = BufferPool(PoolingConfig(), max_idle_builds=1)
    if kind == "np.empty":

        def build() -> np.ndarray:
            for _ in range(32):
                array = np.empty(n)
                array.fill(1.0)
            return array

    else:

        def build() -> np.ndarray:
            buffers = pool.acquire()
            empty = buffers.empty
            for _ in range(32):
                array = empty(n)
                array.fill(1.0)
            buffers.release()
            return array

    build()
    warm = pool.stats()
    array = benchmark(build)
    assert array.shape == (n,) and array.dtype == np.float64
    stats = pool.stats()
    if kind == "pooled":
        # Warm, nothing new is allocated: each request is a hit or (outside the pooled
        # sizes) a plain np.empty, and the buffers of the last build are back in the pool.
        assert stats.misses == warm.misses
        assert stats.hits + stats.unpooled > warm.hits + warm.unpooled
        assert stats.outstanding == 0
    else:
        assert stats == warm  # the baseline never touched the pool


def test_acquire_release_8_threads(benchmark: Any) -> None:
    """Acquire + 30 hits + release per build, 8 threads building at once."""
    pool = BufferPool(PoolingConfig(), WORKERS + 1)
    sizes = [600, 599, 580, 550, 579, 1, 5] * 4 + [600, 2]
    builds = 500
    used: list[dict[int, BuildBuffers]] = []  # per run, the BuildBuffers the builds got

    def work(seen: dict[int, BuildBuffers]) -> None:
        for _ in range(builds):
            buffers = pool.acquire()
            seen[id(buffers)] = buffers  # kept alive, so no id is reused within a run
            for n in sizes:
                assert buffers.empty(n).shape == (n,)
            buffers.release()

    def run() -> float:
        seen: dict[int, BuildBuffers] = {}
        used.append(seen)
        threads = [threading.Thread(target=work, args=(seen,)) for _ in range(WORKERS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.perf_counter() - started) / (WORKERS * builds)

    run()
    per_build = benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["seconds_per_build"] = per_build
    # 4000 builds per run on at most one set of buffers per thread, plus one: reused, not
    # made per build.
    assert all(0 < len(seen) <= WORKERS + 1 for seen in used), [len(seen) for seen in used]
    assert pool.stats().outstanding == 0 and pool.leaks() == []
