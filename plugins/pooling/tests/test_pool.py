"""The ObjectPool contract."""

from __future__ import annotations

import logging
import threading

import pytest

from sltrader_pooling import ObjectPool, PoolError


def test_reuses_released_objects_last_in_first_out() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=4)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    pool.release(b)
    assert pool.acquire() is b
    assert pool.acquire() is a
    stats = pool.stats()
    assert (stats.created, stats.outstanding, stats.idle) == (2, 2, 0)


def test_reset_runs_on_release() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=2, reset=list.clear)
    items = pool.acquire()
    items.append(1)
    pool.release(items)
    assert pool.acquire() == []


def test_never_keeps_more_than_max_size_idle() -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=3)
    lent = [pool.acquire() for _ in range(10)]
    for obj in lent:
        pool.release(obj)
    stats = pool.stats()
    assert stats.idle == 3
    assert stats.discarded == 7
    assert stats.outstanding == 0


def test_max_size_zero_keeps_nothing() -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=0)
    obj = pool.acquire()
    pool.release(obj)
    assert pool.acquire() is not obj


def test_negative_max_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        ObjectPool(object, max_size=-1)


def test_double_release_raises() -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=2, name="things")
    obj = pool.acquire()
    pool.release(obj)
    with pytest.raises(PoolError, match=r"things: .* released twice"):
        pool.release(obj)
    assert pool.stats().idle == 1


def test_double_release_after_discard_still_raises() -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=0)
    obj = pool.acquire()
    pool.release(obj)
    with pytest.raises(PoolError, match="not lent"):
        pool.release(obj)


def test_foreign_object_raises() -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=2)
    pool.acquire()
    with pytest.raises(PoolError, match="not lent by this pool"):
        pool.release(object())
    other: ObjectPool[object] = ObjectPool(object, max_size=2)
    with pytest.raises(PoolError):
        other.release(pool.acquire())
    assert pool.outstanding == 2


def test_equal_but_distinct_objects_are_told_apart() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=2)
    lent = pool.acquire()
    with pytest.raises(PoolError):
        pool.release([])  # equal to the lent one, but not it
    pool.release(lent)


def test_lease_releases_on_error() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=2, reset=list.clear)
    with pytest.raises(KeyError), pool.lease() as items:
        items.append(1)
        raise KeyError("boom")
    assert pool.outstanding == 0
    with pool.lease() as again:
        assert again is items and again == []


def test_failing_reset_drops_the_object() -> None:
    def reset(items: list[int]) -> None:
        if items:
            raise RuntimeError("cannot reset")

    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=2, reset=reset)
    items = pool.acquire()
    items.append(1)
    with pytest.raises(RuntimeError):
        pool.release(items)
    stats = pool.stats()
    assert (stats.outstanding, stats.idle, stats.discarded) == (0, 0, 1)


def test_idle_weight_is_tracked() -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=2, weigh=len)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    a.extend([1, 2])
    b.append(1)
    c.extend([1, 2, 3, 4])
    for obj in (a, b, c):
        pool.release(obj)
    assert pool.stats().idle_weight == 3  # c was discarded: the idle set was full
    pool.acquire()
    assert pool.stats().idle_weight == 2
    assert pool.clear() == 1
    assert pool.stats().idle_weight == 0


def test_shutdown_reports_leaks(caplog: pytest.LogCaptureFixture) -> None:
    pool: ObjectPool[list[int]] = ObjectPool(
        list, max_size=2, describe=lambda items: f"list#{len(items)}", name="lists"
    )
    kept = [pool.acquire() for _ in range(12)]
    kept[0].append(7)
    pool.release(pool.acquire())
    with caplog.at_level(logging.WARNING):
        assert pool.shutdown() == 12
    assert "lists: 12 object(s) acquired and never released" in caplog.text
    assert "list#1" in caplog.text and "and 2 more" in caplog.text
    assert pool.stats().idle == 0
    pool.release(kept[0])  # a late release still works
    assert pool.outstanding == 11


def test_shutdown_without_leaks_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    pool: ObjectPool[object] = ObjectPool(object, max_size=2)
    with pool.lease():
        pass
    with caplog.at_level(logging.WARNING):
        assert pool.shutdown() == 0
    assert caplog.text == ""


def test_threads_never_get_the_same_object(in_threads) -> None:
    pool: ObjectPool[list[int]] = ObjectPool(list, max_size=4, reset=list.clear)
    errors: list[str] = []
    holders: dict[int, int] = {}
    guard = threading.Lock()

    def work(tid: int) -> None:
        for _ in range(2000):
            with pool.lease() as obj:
                with guard:
                    if id(obj) in holders:
                        errors.append(f"{tid} got an object held by {holders[id(obj)]}")
                    holders[id(obj)] = tid
                obj.append(tid)
                with guard:
                    del holders[id(obj)]

    in_threads(work, 8)
    assert errors == []
    stats = pool.stats()
    assert stats.outstanding == 0 and stats.idle <= 4
    assert stats.created - stats.discarded == stats.idle  # nothing lost, nothing kept twice
