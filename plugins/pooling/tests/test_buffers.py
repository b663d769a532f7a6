"""The size-classed buffers lent per build."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sltrader_pooling import BufferPool, PoolError, PoolingConfig, size_class
from sltrader_pooling.buffers import MIN_CLASS

Build = Callable[..., np.ndarray]


def make_pool(workers: int = 4, **settings: Any) -> BufferPool:
    return BufferPool(PoolingConfig(**settings), max_idle_builds=workers)


def _data_range(array: np.ndarray) -> tuple[int, int]:
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


# -- size classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "steps", "expected"),
    [
        (1, 4, MIN_CLASS),
        (16, 4, 16),
        (17, 4, 20),
        (500, 4, 512),
        (512, 4, 512),
        (513, 4, 640),
        (520, 1, 1024),
        (1000, 2, 1024),
        (769, 2, 1024),
        (768, 2, 768),
    ],
)
def test_size_class(n: int, steps: int, expected: int) -> None:
    assert size_class(n, steps) == expected


@given(st.integers(1, 1 << 24), st.sampled_from([1, 2, 4, 8]))
def test_size_class_bounds_the_slack(n: int, steps: int) -> None:
    cls = size_class(n, steps)
    assert cls >= n
    assert cls <= max(MIN_CLASS, n + n // steps + 1)
    assert size_class(cls, steps) == cls  # a class serves itself


# -- one build ----------------------------------------------------------------------------


def test_a_second_build_reuses_every_buffer() -> None:
    pool = make_pool()
    first = pool.acquire("BTC_USDT", "1m", 500)
    arrays = [first.empty(500), first.empty(499), first.empty(500), first.empty(10, np.int64)]
    first.release()
    second = pool.acquire()
    assert second is first
    again = [second.empty(500), second.empty(499), second.empty(500), second.empty(10, np.int64)]
    second.release()
    assert all(a is b for a, b in zip(arrays, again, strict=True))
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.builds) == (4, 4, 2)
    assert stats.idle_builds == 1 and stats.outstanding == 0


def test_arrays_have_the_requested_shape_and_dtype() -> None:
    buffers = make_pool().acquire()
    for n, dtype in [(500, np.float64), (499, "f8"), (37, np.int32), (3, np.bool_), (0, float)]:
        array = buffers.empty(n, dtype)
        assert array.shape == (n,)
        assert array.dtype == np.dtype(dtype)
        assert array.flags.c_contiguous and array.flags.writeable
    buffers.release()


def test_a_hit_allocates_nothing() -> None:
    pool = make_pool()
    for _ in range(3):  # warm the tables and the dtype cache
        buffers = pool.acquire()
        for n in (500, 499, 498, 500):
            buffers.empty(n)
        buffers.release()
    buffers = pool.acquire()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        arrays = [buffers.empty(n) for n in (500, 499, 498, 500)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    buffers.release()
    assert len(arrays) == 4
    pooling = [
        stat
        for stat in after.compare_to(before, "filename")
        if "sltrader_pooling" in stat.traceback[0].filename and stat.count_diff
    ]
    assert pooling == []


def test_small_large_and_object_arrays_are_not_pooled() -> None:
    pool = make_pool(min_pooled_bytes=1024, max_pooled_bytes=1 << 16)
    buffers = pool.acquire()
    small = buffers.empty(100)  # 800 bytes
    large = buffers.empty(10_000)  # 80 kB
    objects = buffers.empty(600, object)
    swapped = buffers.empty(600, ">f8" if np.little_endian else "<f8")
    pooled = buffers.empty(200)
    buffers.release()
    assert small.base is None and large.base is None
    assert objects.dtype == object and swapped.shape == (600,)
    assert pooled.base is not None  # a view of a 256-element class base
    stats = pool.stats()
    assert (stats.unpooled, stats.misses) == (4, 1)


def test_invalid_lengths_raise_like_numpy() -> None:
    buffers = make_pool().acquire()
    with pytest.raises(ValueError):
        buffers.empty(-1)
    buffers.release()


def test_numpy_integer_lengths() -> None:
    buffers = make_pool().acquire()
    assert buffers.empty(np.int64(300)).shape == (300,)
    buffers.release()


def test_a_new_length_takes_a_spare_base_of_its_class() -> None:
    pool = make_pool()
    buffers = pool.acquire()
    old = buffers.empty(500)
    buffers.release()
    buffers = pool.acquire()
    new = buffers.empty(501)  # same class (512): no allocation
    buffers.release()
    assert new.base is old.base
    assert pool.stats().misses == 1
    buffers = pool.acquire()
    assert buffers.empty(501) is new  # the view is kept: a hit allocates nothing
    buffers.release()
    assert buffers.nbytes == 512 * 8


def test_a_growing_series_keeps_its_memory_within_a_class() -> None:
    pool = make_pool()
    for n in range(600, 700):  # one more candle per build
        buffers = pool.acquire()
        for length in (n, n - 1, n - 20):
            buffers.empty(length)
        buffers.release()
    stats = pool.stats()
    # Classes 640 and 768 hold everything: a few allocations, not one per length.
    assert stats.misses <= 9
    assert stats.hits == 300 - stats.misses
    assert buffers.nbytes <= 3 * 768 * 8 + 3 * 640 * 8


def test_release_twice_and_use_after_release_raise() -> None:
    pool = make_pool()
    buffers = pool.acquire()
    buffers.release()
    with pytest.raises(PoolError, match="released twice"):
        buffers.release()
    with pytest.raises(PoolError, match="after release"):
        buffers.empty(10)


def test_poison_fills_reused_buffers() -> None:
    pool = make_pool(poison=True)
    buffers = pool.acquire()
    buffers.empty(500)[:] = 1.0
    buffers.empty(500, np.int64)[:] = 1
    buffers.empty(300)[:] = 1.0
    buffers.release()
    buffers = pool.acquire()
    assert np.isnan(buffers.empty(500)).all()
    assert (buffers.empty(500, np.int64) == -1).all()
    assert np.isnan(buffers.empty(310)).all()  # a spare of 300's class, all of its base
    buffers.release()


def test_repr_names_the_build() -> None:
    buffers = make_pool().acquire("ETH/USDT", "5m", 600)
    assert "ETH/USDT 5m n=600 lent" in repr(buffers)
    buffers.release()
    assert "idle" in repr(buffers)


def test_shutdown_reports_unreleased_builds(caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool()
    pool.acquire("SOL-PERP", "1m", 500).empty(500)
    pool.acquire().release()
    assert pool.shutdown() == 1
    assert "SOL-PERP 1m n=500" in caplog.text
    assert len(pool.leaks()) == 1


# -- bounds -------------------------------------------------------------------------------


def test_per_build_bytes_are_trimmed_unused_first() -> None:
    pool = make_pool(workers=1, max_idle_bytes=3 * 512 * 8)
    buffers = pool.acquire()
    for _ in range(5):
        buffers.empty(500)
    buffers.release()
    assert buffers.nbytes == 3 * 512 * 8
    assert pool.stats().dropped_bytes == 2 * 512 * 8
    buffers = pool.acquire()
    buffers.empty(1000)  # 8 kB more: two of the three unused 512s are dropped
    buffers.release()
    assert buffers.nbytes == (512 + 1024) * 8
    buffers = pool.acquire()
    buffers.empty(100)
    buffers.empty(500)
    buffers.release()
    assert buffers.nbytes == (112 + 512) * 8  # the unused 1024 went, the 512 was used
    buffers = pool.acquire()
    assert pool.stats().idle_bytes == 0
    assert buffers.empty(100) is not None
    buffers.release()


@pytest.mark.parametrize(
    ("max_idle_bytes", "hits", "misses"),
    [
        (0, 0, 6),  # nothing stays idle: every release drops every buffer, used or not
        (1024 * 8, 2, 4),  # room for one: later builds reuse it, the other is dropped
    ],
)
def test_counts_survive_trimming(max_idle_bytes: int, hits: int, misses: int) -> None:
    # What a build was lent is counted even when the release trims it away.
    pool = make_pool(workers=1, max_idle_bytes=max_idle_bytes)
    for _ in range(3):
        buffers = pool.acquire()
        buffers.empty(1000)
        buffers.empty(1000)
        buffers.release()
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.builds) == (hits, misses, 3)
    assert stats.idle_bytes <= max_idle_bytes


def test_idle_bytes_stay_within_the_bound_over_10000_builds(build: Build) -> None:
    bound = 6 * 60_000
    pool = make_pool(workers=3, max_idle_bytes=bound)
    rng = np.random.default_rng(7)
    for i in range(10_000):
        n = int(rng.integers(100, 1200))  # lengths vary: classes come and go
        close = np.full(n, 100.0) + np.arange(n) * 0.01
        buffers = [pool.acquire() for _ in range(1 + i % 3)]
        for b in buffers:
            b.empty(n)[:] = close
            b.empty(n - 1)[:] = close[1:]
            b.empty(int(rng.integers(20, 3000)), np.int64)[:] = 0
        for b in buffers:
            b.release()
        stats = pool.stats()
        assert stats.idle_bytes <= bound
        assert stats.outstanding == 0
    assert pool.stats().builds == sum(1 + i % 3 for i in range(10_000))
    assert pool.stats().created == 3


# -- concurrency ------------------------------------------------------------------------


def test_concurrent_builds_never_share_a_buffer(
    build: Build, series: Callable[..., Any], in_threads
) -> None:
    pool = make_pool(workers=8)
    owner: dict[tuple[int, int], int] = {}
    guard = threading.Lock()
    errors: list[str] = []
    close, high, low = series(3, 600)
    expected = build(close, high, low, _Plain())

    class Checked:
        """Records the memory range of every array a build holds; overlaps are errors."""

        def __init__(self, tid: int) -> None:
            self.inner = pool.acquire(f"T{tid}", "1m", 600)
            self.tid = tid
            self.held: list[tuple[int, int]] = []

        def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
            array = self.inner.empty(n, dtype)
            span = _data_range(array)
            with guard:
                for (start, stop), tid in owner.items():
                    if span[0] < stop and start < span[1] and span[0] != span[1]:
                        errors.append(f"T{self.tid} got memory held by T{tid}")
                owner[span] = self.tid
            self.held.append(span)
            return array

        def release(self) -> None:
            with guard:
                for span in self.held:
                    owner.pop(span, None)
            self.inner.release()

    def work(tid: int) -> None:
        for _ in range(150):
            got = build(close, high, low, Checked(tid))
            if not np.array_equal(got, expected):
                errors.append(f"T{tid}: features differ")

    in_threads(work, 8)
    assert errors == []
    stats = pool.stats()
    assert stats.outstanding == 0
    assert stats.created <= 8
    assert stats.hits > 10 * stats.misses


class _Plain:
    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        return np.empty(n, dtype)

    def release(self) -> None:
        pass


def test_a_build_that_raises_returns_every_buffer(build: Build) -> None:
    pool = make_pool(workers=2)
    close = np.linspace(100.0, 110.0, 500)
    high = close + 1.0
    low = close[:-1]  # one short: the ATR step raises mid-build
    for _ in range(20):
        with pytest.raises(ValueError):
            build(close, high, low, pool.acquire("BAD", "1m", 500))
    stats = pool.stats()
    assert stats.outstanding == 0
    assert stats.builds == 20
    assert stats.created == 1
    assert stats.hits > 0


def test_spellings_of_one_dtype_share_buffers() -> None:
    pool = make_pool()
    buffers = pool.acquire()
    first = buffers.empty(300, np.float64)
    buffers.release()
    buffers = pool.acquire()
    assert buffers.empty(300, "f8") is first
    assert buffers.empty(300, np.dtype("float64")) is not first  # the first is taken
    pool.release(buffers)  # the same as buffers.release()
    assert pool.stats().hits == 1


def test_stats_count_builds_in_progress_and_flushed() -> None:
    pool = make_pool(workers=1)
    for _ in range(100):  # 300 hits per BuildBuffers: flushed to the pool on the way
        buffers = pool.acquire()
        for n in (100, 200, 300):
            buffers.empty(n)
        buffers.release()
    stats = pool.stats()
    assert (stats.builds, stats.hits, stats.misses) == (100, 297, 3)
