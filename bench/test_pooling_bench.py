"""Benchmarks of the pooling plugin (``pytest bench/test_pooling_bench.py``).

- build time of one host feature build, plugin-free vs pooled vs the *floor*
  (``bench/floor/sltrader_floor.py``: buffers that cost nothing, the fastest any buffer
  plugin can make a build through ``on_feature_build``); one thread, and 8 threads at
  once (thread CPU time per build, as the host's scan measures it);
- gross allocation per build (bytes and blocks, the host's own probe), in
  ``extra_info`` of the same tests' JSON (``--benchmark-json``);
- one ``empty`` request by array size, pooled hit vs ``np.empty`` (where pooling stops
  paying: ``min_pooled_bytes``);
- the pool's acquire + release per build with 8 threads, one shared lock-protected pool
  vs a ``threading.local`` one (the per-thread vs shared decision in docs/pooling.md).

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
    manager = PluginManager()
    if kind == "pooling":
        manager.register(PoolingPlugin(), "pooling")
        manager.start(_services())
    elif kind == "floor":
        manager.register(FloorPlugin(), "floor")
    # Every kind through the same call site, so only the buffers differ.
    return features.FeatureEngine(Plugins(manager))


def test_floor_is_exact(klines: Any) -> None:
    """The floor computes the same features (else its time would mean nothing)."""
    expected = _engine("none").build("BTC_USDT", "1m", klines)
    floor = _engine("floor")
    for _ in range(3):
        assert np.array_equal(floor.build("BTC_USDT", "1m", klines), expected)


@pytest.mark.parametrize("kind", ["none", "pooling", "floor"])
def test_feature_build(benchmark: Any, klines: Any, kind: str) -> None:
    engine = _engine(kind)
    for _ in range(20):  # warm: the pool fills, the layout is built
        engine.build("BTC_USDT", "1m", klines)
    allocation = allocations.measure(lambda: engine.build("BTC_USDT", "1m", klines), repeat=20)
    benchmark.extra_info["alloc_bytes_per_build"] = allocation.bytes
    benchmark.extra_info["alloc_blocks_per_build"] = allocation.blocks
    benchmark.extra_info["alloc_peak_bytes"] = allocation.peak
    benchmark(engine.build, "BTC_USDT", "1m", klines)


@pytest.mark.parametrize("kind", ["none", "pooling", "floor"])
def test_feature_build_8_threads(benchmark: Any, klines: Any, kind: str) -> None:
    """Thread CPU time per build with 8 threads building at once (the scan's metric)."""
    engine = _engine(kind)
    builds = 300

    def run() -> float:
        spent: list[float] = []

        def work() -> None:
            start = time.thread_time()
            for _ in range(builds):
                engine.build("BTC_USDT", "1m", klines)
            spent.append(time.thread_time() - start)

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


@pytest.mark.parametrize("n", [1, 16, 128, 512, 4096, 65536])
@pytest.mark.parametrize("kind", ["np.empty", "pooled"])
def test_empty_by_size(benchmark: Any, kind: str, n: int) -> None:
    """32 requests of ``n`` float64 per build, written once (as a build would)."""
    if kind == "np.empty":

        def build() -> None:
            for _ in range(32):
                np.empty(n).fill(1.0)

    else:
        pool = BufferPool(PoolingConfig(), max_idle_builds=1)

        def build() -> None:
            buffers = pool.acquire()
            empty = buffers.empty
            for _ in range(32):
                empty(n).fill(1.0)
            buffers.release()

    build()
    benchmark(build)


class PerThreadPool:
    """The rejected alternative: one BuildBuffers per thread in a threading.local, no
    lock. (A thread's second concurrent build gets a fresh one.)"""

    def __init__(self, config: PoolingConfig) -> None:
        self._shared = BufferPool(config, 1)
        self.config = config
        self.dtypes = self._shared.dtypes
        self.dtype_info = self._shared.dtype_info
        self.max_bytes_per_build = config.max_idle_bytes
        self._poison = None
        self._local = threading.local()

    def acquire(self) -> BuildBuffers:
        buffers = getattr(self._local, "buffers", None)
        if buffers is None or buffers._active:
            buffers = BuildBuffers(self, BuildBuffers._recycle)  # type: ignore[arg-type]
            self._local.buffers = buffers
        buffers._active = True
        buffers._lookup = buffers._spellings
        return buffers

    def _flush(self, buffers: BuildBuffers) -> None:
        buffers._take_counts()

    def _add_dropped(self, nbytes: int) -> None:
        pass


@pytest.mark.parametrize("kind", ["shared", "per-thread"])
def test_acquire_release_8_threads(benchmark: Any, kind: str) -> None:
    """Acquire + 30 hits + release per build, 8 threads building at once."""
    config = PoolingConfig()
    pool: Any = BufferPool(config, WORKERS + 1) if kind == "shared" else PerThreadPool(config)
    sizes = [600, 599, 580, 550, 579, 1, 5] * 4 + [600, 2]
    builds = 500

    def work() -> None:
        for _ in range(builds):
            buffers = pool.acquire()
            for n in sizes:
                buffers.empty(n)
            buffers.release()

    def run() -> float:
        threads = [threading.Thread(target=work) for _ in range(WORKERS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.perf_counter() - started) / (WORKERS * builds)

    run()
    per_build = benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["seconds_per_build"] = per_build
