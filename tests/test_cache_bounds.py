"""``SingleFlightCache`` with ``fetch_timeout_s``: a hung fetch costs its readers one bound.

A fetch has one deadline (its start plus ``fetch_timeout_s``) that every reader of its
key shares: a prefetch that times out, then a demand read of the same key, wait that
bound once between them, not once each. Past the deadline the hung fetch holds its key
(reads fail at once, no second request) until it returns, a newer candle is wanted, or
``retry_hung_after_s`` have passed.

The exchange here is a function whose requests for :data:`SICK` wait for an event that
the test sets when it ends, so no thread outlives the test by more than that.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from sltrader_plugins import Klines, SingleFlightCache, last_close_time, timeframe_seconds
from tests.polling import wait_until

T = 0.2  #: fetch_timeout_s of these tests
#: What a hung fetch may cost its readers altogether: one bound, with room for a loaded
#: machine, and well short of the two bounds it cost before (a prefetch's, then a read's).
ONCE = 1.6 * T
T0 = 1_700_000_045.0  # 5 s after a 1m candle close
SICK = "SICK/USDT"


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t


class Exchange:
    """Serves constant candles up to the clock's last close; requests for SICK hang until
    ``release`` is set, or raise ``fail`` when it is set."""

    def __init__(self, clock: Clock, release: threading.Event) -> None:
        self.clock = clock
        self.release = release
        self.requests: Counter[tuple[str, str]] = Counter()
        self.empty: set[str] = set()  # symbols answered with no candle at all
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        with self._lock:
            self.requests[(symbol, timeframe)] += 1
        now = self.clock.now()  # the request is for the candles closed when it was made
        if symbol == SICK:
            self.release.wait(60)
        if self.fail is not None:
            raise self.fail
        n = 0 if symbol in self.empty else 3
        newest = last_close_time(timeframe, now)
        opens = newest - timeframe_seconds(timeframe) * np.arange(n, 0, -1)
        ones = np.ones(n)
        return Klines(symbol, timeframe, opens, ones, ones, ones, ones, ones)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    release = threading.Event()
    yield release
    release.set()  # the hung requests return: their threads end with the test


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def exchange(clock: Clock, release: threading.Event) -> Exchange:
    return Exchange(clock, release)


def bounded(exchange: Exchange, clock: Clock, **options: float) -> SingleFlightCache:
    return SingleFlightCache(exchange.fetch_klines, clock, 16, fetch_timeout_s=T, **options)


def timed_timeout(call, *args: str) -> float:
    """Seconds until ``call(*args)`` raised ``TimeoutError`` (it must)."""
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not return within 0\.2 s"):
        call(*args)
    return time.monotonic() - started


def test_a_prefetch_then_a_read_of_a_hung_key_wait_one_bound(exchange, clock) -> None:
    cache = bounded(exchange, clock)
    waited = timed_timeout(cache.prefetch, SICK, "1m")
    assert waited >= 0.9 * T  # the prefetch did wait for its fetch
    # The demand read shares the hung fetch's deadline, which has passed: it fails at
    # once instead of making a second request and waiting a second bound.
    waited += timed_timeout(cache.get_klines, SICK, "1m")
    assert waited < ONCE
    assert exchange.requests[(SICK, "1m")] == 1
    # Counted as a demand miss that made no request of its own.
    assert (cache.stats().demand_misses, cache.extra_stats()["coalesced_misses"]) == (1, 1)
    # Without the hang everything is served as usual: the prefetched series is read.
    assert cache.prefetch("BTC_USDT", "1m") is True
    assert cache.get_klines("BTC_USDT", "1m").last_close_time == T0 - 5
    stats = cache.stats()
    assert (stats.demand_hits, stats.prefetches, stats.prefetches_used) == (1, 2, 1)
    assert exchange.requests[("BTC_USDT", "1m")] == 1


def test_a_read_joining_a_running_fetch_waits_only_what_is_left(exchange, clock) -> None:
    cache = bounded(exchange, clock)
    started = time.monotonic()
    prefetch = threading.Thread(target=timed_timeout, args=(cache.prefetch, SICK, "1m"))
    prefetch.start()
    time.sleep(T / 2)
    with pytest.raises(TimeoutError):
        cache.get_klines(SICK, "1m")
    assert time.monotonic() - started < ONCE  # the prefetch's deadline, not a new one
    prefetch.join()
    assert exchange.requests[(SICK, "1m")] == 1
    assert cache.prefetch(SICK, "1m") is False  # still held by the hung fetch: no request
    assert exchange.requests[(SICK, "1m")] == 1


def test_reads_of_a_hung_key_start_no_more_requests_or_threads(exchange, clock) -> None:
    cache = bounded(exchange, clock)
    timed_timeout(cache.get_klines, SICK, "1m")
    before = threading.active_count()
    for _ in range(20):
        assert timed_timeout(cache.get_klines, SICK, "1m") < T / 2
    assert exchange.requests[(SICK, "1m")] == 1
    assert threading.active_count() <= before
    assert len(cache._inflight) == 1


def test_a_newer_candle_retries_a_hung_key(exchange, clock) -> None:
    cache = bounded(exchange, clock)
    timed_timeout(cache.get_klines, SICK, "1m")
    clock.t += 60  # the next close: the next scan asks the exchange again
    assert timed_timeout(cache.get_klines, SICK, "1m") >= 0.9 * T
    assert exchange.requests[(SICK, "1m")] == 2


def test_a_hung_key_is_retried_after_retry_hung_after_s(exchange, clock) -> None:
    cache = bounded(exchange, clock, retry_hung_after_s=0.3)
    timed_timeout(cache.get_klines, SICK, "1m")
    assert timed_timeout(cache.get_klines, SICK, "1m") < T / 2  # held: no request
    time.sleep(0.3)
    # Same candle, but the hung request has had its chance: a new one goes out.
    assert timed_timeout(cache.get_klines, SICK, "1m") >= 0.9 * T
    assert exchange.requests[(SICK, "1m")] == 2
    with pytest.raises(ValueError, match="retry_hung_after_s must be a positive number"):
        bounded(exchange, clock, retry_hung_after_s=0.0)


def test_the_hung_fetch_returning_frees_its_key_and_caches_its_series(
    exchange, clock, release
) -> None:
    cache = bounded(exchange, clock)
    timed_timeout(cache.prefetch, SICK, "1m")
    release.set()  # the exchange answers the hung request at last
    assert wait_until(lambda: not cache._inflight)
    assert cache.get_klines(SICK, "1m").last_close_time == T0 - 5
    assert exchange.requests[(SICK, "1m")] == 1  # what it brought was cached, then read
    assert cache.stats().prefetches_used == 1


def test_an_error_the_hung_fetch_raises_late_frees_its_key(exchange, clock, release) -> None:
    cache = bounded(exchange, clock)
    timed_timeout(cache.get_klines, SICK, "1m")
    exchange.fail = ConnectionError("reset")
    release.set()
    assert wait_until(lambda: not cache._inflight)
    with pytest.raises(ConnectionError):  # a new request, which fails on its own
        cache.get_klines(SICK, "1m")
    assert exchange.requests[(SICK, "1m")] == 2
    exchange.fail = None
    assert cache.get_klines(SICK, "1m").n == 3


def test_an_exchanges_own_timeout_reaches_the_reader_as_is(exchange, clock) -> None:
    cache = bounded(exchange, clock)
    exchange.fail = TimeoutError("HTTP 504 from the exchange")
    with pytest.raises(TimeoutError, match="HTTP 504"):
        cache.get_klines("BTC_USDT", "1m")


def test_latest_close_time_of_an_empty_series_is_none(exchange, clock) -> None:
    cache = SingleFlightCache(exchange.fetch_klines, clock, 16)
    exchange.empty.add("NEW_USDT")
    assert cache.get_klines("NEW_USDT", "1m").n == 0
    assert len(cache) == 1  # cached, but with no close time to state
    assert cache.latest_close_time("NEW_USDT", "1m") is None
    assert cache.get_klines("BTC_USDT", "1m").n == 3
    assert cache.latest_close_time("BTC_USDT", "1m") == T0 - 5
    assert cache.latest_close_time("ETH_USDT", "1m") is None  # not cached at all
