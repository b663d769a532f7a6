"""The warmer gives back what its prefetch threads' malloc arenas keep, once its last
prefetch thread ends and at most once a second."""

from __future__ import annotations

import ctypes
import sys

import pytest

from sltrader_plugins import SingleFlightCache
from sltrader_warming import memory
from sltrader_warming.config import WarmingConfig
from sltrader_warming.memory import ArenaTrimmer
from sltrader_warming.warmer import Warmer


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_trim_at_most_once_per_interval_counted_with_its_time() -> None:
    calls: list[int] = []
    clock = Clock()
    trimmer = ArenaTrimmer(trim=lambda pad: calls.append(pad) or 1, monotonic=clock)
    assert trimmer.maybe_trim() and calls == [0]
    clock.t += memory.MIN_INTERVAL_S / 2
    assert not trimmer.maybe_trim() and calls == [0]
    clock.t += memory.MIN_INTERVAL_S
    assert trimmer.maybe_trim() and calls == [0, 0]
    assert trimmer.trims == 2 and trimmer.trim_s >= 0.0


def test_where_the_c_library_has_no_malloc_trim_nothing_happens(monkeypatch) -> None:
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    trimmer = ArenaTrimmer()
    assert not trimmer.available and not trimmer.maybe_trim() and trimmer.trims == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_real_malloc_trim_runs_here() -> None:
    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("this C library has no malloc_trim (musl)")
    trimmer = ArenaTrimmer()
    assert trimmer.available and trimmer.maybe_trim() and trimmer.trims == 1


def test_the_warmer_trims_when_its_last_prefetch_thread_ends(
    cache: SingleFlightCache, clock, exchange
) -> None:
    trims: list[int] = []
    trimmer = ArenaTrimmer(trim=lambda pad: trims.append(pad) or 1, monotonic=Clock())
    config = WarmingConfig(warm_threshold=1, max_parallel=4)
    warmer = Warmer(config, cache, clock, (), trimmer=trimmer)
    symbols = [f"S{i}_USDT" for i in range(8)]
    for symbol in symbols:
        cache.get_klines(symbol, "1m")
    warmer.record_scan(symbols, "1m", clock.now())
    clock.advance(60)
    assert warmer.refresh("1m", clock.now(), clock.now() + 10) == len(symbols)
    assert warmer.wait_idle(5.0)
    warmer.close()
    # Four threads ended; only the last trimmed (and the interval holds any later one).
    assert trims == [0]
    assert warmer.metrics()["arena_trims"] == 1
