"""The buffers lent per build, and the pool that lends them."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from sltrader_pooling import BufferPool, PoolError, PoolingConfig

Build = Callable[..., np.ndarray]


def make_pool(workers: int = 4, **settings: Any) -> BufferPool:
    return BufferPool(PoolingConfig(**settings), max_idle_builds=workers)


def _data_range(array: np.ndarray) -> tuple[int, int]:
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


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


def test_large_and_object_arrays_are_not_pooled() -> None:
    pool = make_pool(max_pooled_bytes=1 << 16)
    buffers = pool.acquire()
    large = buffers.empty(10_000)  # 80 kB
    objects = buffers.empty(600, object)
    swapped = buffers.empty(600, ">f8" if np.little_endian else "<f8")
    unhashable = buffers.empty(3, [("a", "f8")])  # a dtype spelled as a list
    pooled = buffers.empty(200)
    buffers.release()
    assert objects.dtype == object and swapped.shape == (600,) and unhashable.shape == (3,)
    stats = pool.stats()
    assert (stats.unpooled, stats.misses) == (3, 2)
    assert buffers.nbytes == swapped.nbytes + pooled.nbytes
    buffers = pool.acquire()
    assert buffers.empty(10_000) is not large
    assert buffers.empty(200) is pooled
    buffers.release()


def test_invalid_lengths_raise_like_numpy() -> None:
    buffers = make_pool().acquire()
    with pytest.raises(ValueError):
        buffers.empty(-1)
    buffers.release()


def test_numpy_integer_lengths() -> None:
    buffers = make_pool().acquire()
    assert buffers.empty(np.int64(300)).shape == (300,)
    buffers.release()


def test_a_series_that_grows_is_served_and_stays_bounded() -> None:
    # One more candle per build: each length is new once (a miss: no size classes; the
    # host's series keep their length from scan to scan), this build's n - 1 is the last
    # one's n (a hit), and old lengths are dropped first when the set is over its share.
    pool = make_pool(workers=1, max_idle_bytes=4 * 700 * 8)
    for n in range(600, 700):
        buffers = pool.acquire()
        for length in (n, n - 1):
            buffers.empty(length)
        buffers.release()
        assert buffers.nbytes <= 4 * 700 * 8
    stats = pool.stats()
    assert (stats.misses, stats.hits) == (101, 99)
    assert stats.dropped_bytes > 0


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
    assert np.isnan(buffers.empty(300)).all()
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
    pool = make_pool(workers=1, max_idle_bytes=3 * 500 * 8)
    buffers = pool.acquire()
    for _ in range(5):
        buffers.empty(500)
    buffers.release()
    assert buffers.nbytes == 3 * 500 * 8
    assert pool.stats().dropped_bytes == 2 * 500 * 8
    buffers = pool.acquire()
    buffers.empty(1000)  # 8 kB more: two of the three unused 500s are dropped
    buffers.release()
    assert buffers.nbytes == (500 + 1000) * 8
    buffers = pool.acquire()
    buffers.empty(100)
    buffers.empty(500)
    buffers.release()
    assert buffers.nbytes == (100 + 500) * 8  # the unused 1000 went, the 500 was used
    buffers = pool.acquire()
    assert pool.stats().idle_bytes == 0
    assert buffers.empty(100) is not None
    buffers.release()


def test_idle_sets_are_bounded_in_number() -> None:
    pool = make_pool(workers=2)
    sets = [pool.acquire(f"S{i}", "1m", 10) for i in range(5)]
    for buffers in sets:
        buffers.empty(10)
    assert pool.stats().outstanding == 5
    for buffers in sets:
        buffers.release()
    stats = pool.stats()
    assert (stats.outstanding, stats.idle_builds, stats.created) == (0, 2, 5)
    assert stats.dropped_bytes == 3 * 10 * 8
    assert pool.leaks() == []


def test_a_negative_idle_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_idle_builds"):
        make_pool(workers=-1)


@pytest.mark.parametrize(
    ("max_idle_bytes", "hits", "misses"),
    [
        (0, 0, 6),  # nothing stays idle: every release drops every buffer, used or not
        (1000 * 8, 2, 4),  # room for one: later builds reuse it, the other is dropped
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


def test_each_spelling_of_a_dtype_is_reused() -> None:
    pool = make_pool()
    buffers = pool.acquire()
    first = buffers.empty(300, np.float64)
    second = buffers.empty(300, "f8")
    buffers.release()
    assert first is not second and second.dtype == np.float64
    buffers = pool.acquire()
    assert buffers.empty(300, "f8") is second
    assert buffers.empty(300, np.float64) is first
    buffers.release()
    assert (pool.stats().hits, pool.stats().misses) == (2, 2)


def test_stats_count_every_build() -> None:
    pool = make_pool(workers=1)
    for _ in range(100):
        buffers = pool.acquire()
        for n in (100, 200, 300):
            buffers.empty(n)
        buffers.release()
    stats = pool.stats()
    assert (stats.builds, stats.hits, stats.misses) == (100, 297, 3)
