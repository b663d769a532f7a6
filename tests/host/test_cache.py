from __future__ import annotations

import threading
import time

import pytest

from sltrader_plugins import KlineCache, SingleFlightCache
from sltrader_plugins.host.exchange import ExchangeError, ReplayExchange
from sltrader_plugins.timeframes import last_close_time


class CountingExchange:
    """Wraps the replay exchange: counts requests, can be slow or fail."""

    def __init__(self, inner: ReplayExchange, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None  # when set, requests wait for it
        self._lock = threading.Lock()

    def fetch_klines(self, symbol, timeframe, limit):
        with self._lock:
            self.calls.append((symbol, timeframe))
        time.sleep(self.delay)
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        return self.inner.fetch_klines(symbol, timeframe, limit)

    def top_symbols(self, n):
        return self.inner.top_symbols(n)


def wait_for_flight(cache, key, waiters: int = 0) -> None:
    """Until a request for ``key`` is in flight with ``waiters`` demand reads waiting on it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        flight = cache._inflight.get(key)
        if flight is not None and flight.demand_waiters == waiters:
            return
        time.sleep(0.001)
    raise AssertionError(f"no flight for {key} with {waiters} waiters")


@pytest.fixture
def counting(exchange):
    return CountingExchange(exchange)


def test_implements_the_protocol(counting, clock):
    assert isinstance(SingleFlightCache(counting.fetch_klines, clock, 4), KlineCache)


def test_fresh_until_a_newer_candle_closes(counting, clock):
    cache = SingleFlightCache(counting.fetch_klines, clock, 10, limits={"1m": 50, "5m": 20})
    first = cache.get_klines("BTC_USDT", "1m")
    # Just before the next close: still fresh, same object.
    next_close = last_close_time("1m", clock.now()) + 60
    clock.advance(next_close - clock.now() - 0.001)
    assert cache.get_klines("BTC_USDT", "1m") is first
    assert len(counting.calls) == 1
    # Exactly at the close: stale, refetched, and the new candle is there.
    clock.advance(0.001)
    second = cache.get_klines("BTC_USDT", "1m")
    assert second.last_close_time == next_close == first.last_close_time + 60
    assert len(counting.calls) == 2
    assert cache.latest_close_time("BTC_USDT", "1m") == next_close
    assert cache.latest_close_time("BTC_USDT", "5m") is None
    stats = cache.stats()
    assert (stats.demand_hits, stats.demand_misses) == (1, 2)
    assert cache.miss_causes() == {
        "candle_close": 1,
        "new_key": 1,
        "eviction": 0,
        "higher_timeframe": 0,
    }


def test_higher_timeframe_stays_fresh_longer(counting, clock):
    cache = SingleFlightCache(counting.fetch_klines, clock, 10, base_timeframe="1m")
    cache.get_klines("BTC_USDT", "1h")
    clock.advance(60)  # a 1m candle closed, the 1h one (almost surely) not
    if last_close_time("1h", clock.now()) == cache.latest_close_time("BTC_USDT", "1h"):
        cache.get_klines("BTC_USDT", "1h")
        assert len(counting.calls) == 1
    assert cache.miss_causes()["higher_timeframe"] == 1


def test_higher_timeframe_misses_are_split_like_base_ones(counting, clock):
    cache = SingleFlightCache(counting.fetch_klines, clock, 1, base_timeframe="1m")
    cache.get_klines("BTC_USDT", "5m")  # new key, cached
    cache.get_klines("ETH/USDT", "5m")  # new key; no more frequent than BTC: refused
    cache.get_klines("ETH/USDT", "5m")  # refused just now: eviction; now admitted
    clock.advance(300)
    cache.get_klines("ETH/USDT", "5m")  # its candle closed: stale
    split = cache.higher_timeframe_causes()
    assert split == {"candle_close": 1, "new_key": 2, "eviction": 1}
    causes = cache.miss_causes()
    assert causes["higher_timeframe"] == sum(split.values()) == cache.stats().demand_misses
    assert causes["candle_close"] == causes["new_key"] == causes["eviction"] == 0


def test_single_flight_concurrent_misses(exchange, clock):
    slow = CountingExchange(exchange)
    slow.gate = threading.Event()
    cache = SingleFlightCache(slow.fetch_klines, clock, 10)
    results = []

    def read():
        results.append(cache.get_klines("ETH/USDT", "1m"))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    wait_for_flight(cache, ("ETH/USDT", "1m"), waiters=15)
    slow.gate.set()
    for t in threads:
        t.join()
    assert len(slow.calls) == 1
    assert all(r is results[0] for r in results)
    stats = cache.stats()
    assert stats.demand_misses == 16 and stats.demand_hits == 0
    assert cache.extra_stats()["coalesced_misses"] == 15


def test_demand_read_waits_for_a_running_prefetch(exchange, clock):
    slow = CountingExchange(exchange)
    slow.gate = threading.Event()
    cache = SingleFlightCache(slow.fetch_klines, clock, 10)
    t = threading.Thread(target=cache.prefetch, args=("SOL_USDT", "1m"))
    t.start()
    wait_for_flight(cache, ("SOL_USDT", "1m"))
    assert cache.prefetch("SOL_USDT", "1m") is False  # already in flight
    reader = threading.Thread(target=lambda: got.append(cache.get_klines("SOL_USDT", "1m")))
    got = []
    reader.start()
    wait_for_flight(cache, ("SOL_USDT", "1m"), waiters=1)
    slow.gate.set()
    reader.join()
    t.join()
    (klines,) = got
    assert len(slow.calls) == 1
    assert klines.symbol == "SOL_USDT"
    stats = cache.stats()
    assert (stats.prefetches, stats.prefetches_used, stats.demand_hits) == (1, 1, 1)


def test_prefetch_used_and_wasted(counting, clock):
    cache = SingleFlightCache(counting.fetch_klines, clock, 10)
    assert cache.prefetch("BTC_USDT", "1m") is True
    assert cache.prefetch("BTC_USDT", "1m") is False  # fresh already
    cache.get_klines("BTC_USDT", "1m")
    assert cache.prefetch("ETH/USDT", "1m") is True
    clock.advance(60)  # the prefetched ETH series went stale unread
    stats = cache.stats()
    assert (stats.prefetches, stats.prefetches_used, stats.prefetches_wasted) == (2, 1, 1)
    assert stats.demand_hits == 1 and stats.demand_misses == 0
    assert cache.prefetch("ETH/USDT", "1m") is True  # replaces the stale one: still 1 waste
    assert cache.stats().prefetches_wasted == 1


def test_failed_fetch_is_not_cached_and_waiters_see_the_error(exchange, clock):
    slow = CountingExchange(exchange)
    slow.fail = ExchangeError("boom")
    gate = threading.Event()
    slow.gate = gate
    cache = SingleFlightCache(slow.fetch_klines, clock, 10)
    errors = []

    def read():
        try:
            cache.get_klines("BTC_USDT", "1m")
        except ExchangeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    # hold the one request until the three other readers are waiting for it
    wait_for_flight(cache, ("BTC_USDT", "1m"), waiters=3)
    gate.set()
    for t in threads:
        t.join()
    assert len(errors) == 4 and len(slow.calls) == 1
    slow.fail = None
    assert cache.get_klines("BTC_USDT", "1m").symbol == "BTC_USDT"
    assert len(cache) == 1
    with pytest.raises(ExchangeError):
        slow.fail = ExchangeError("again")
        cache.prefetch("ETH/USDT", "1m")


def test_bounded_entries(counting, clock):
    from tests.host.conftest import SYMBOLS

    cache = SingleFlightCache(counting.fetch_klines, clock, 3)
    for _ in range(5):
        for symbol in SYMBOLS:
            for timeframe in ("1m", "5m"):
                cache.get_klines(symbol, timeframe)
                assert len(cache) <= 3
    assert cache.extra_stats()["entries"] == 3


def test_looping_scan_larger_than_capacity_keeps_hitting(market, clock):
    """A plain LRU would get 0 hits: each key is evicted just before it is read again."""
    names = [f"S{i}" for i in range(30)]
    cache = SingleFlightCache(ReplayExchange(market, names, clock).fetch_klines, clock, 20)
    for _ in range(10):
        for name in names:
            cache.get_klines(name, "1m")
    stats = cache.stats()
    assert stats.hit_rate > 0.5
    causes = cache.miss_causes()
    assert causes["eviction"] > 0 and causes["new_key"] == 30


def test_hot_keys_survive_a_one_time_scan(market, clock):
    hot = [f"H{i}" for i in range(8)]
    cold = [f"C{i}" for i in range(50)]
    cache = SingleFlightCache(ReplayExchange(market, hot + cold, clock).fetch_klines, clock, 10)
    for _ in range(3):
        for name in hot:
            cache.get_klines(name, "1m")
    for name in cold:
        cache.get_klines(name, "1m")
    before = cache.stats().demand_hits
    for name in hot:
        cache.get_klines(name, "1m")
    assert cache.stats().demand_hits - before == len(hot)


def test_capacity_must_be_positive(counting, clock):
    with pytest.raises(ValueError):
        SingleFlightCache(counting.fetch_klines, clock, 0)


class SequencedExchange:
    """Each request waits for its own gate, in the order requests arrive."""

    def __init__(self, inner: ReplayExchange, gates: list[threading.Event]) -> None:
        self.inner = inner
        self.gates = list(gates)
        self._lock = threading.Lock()

    def fetch_klines(self, symbol, timeframe, limit):
        with self._lock:
            gate = self.gates.pop(0)
        gate.wait(10)
        return self.inner.fetch_klines(symbol, timeframe, limit)


def test_a_candle_closing_during_a_fetch_does_not_break_single_flight(exchange, clock):
    """An older fetch that lands after a newer one took its slot must leave that slot."""
    first, second = threading.Event(), threading.Event()
    cache = SingleFlightCache(SequencedExchange(exchange, [first, second]).fetch_klines, clock, 10)
    key = ("BTC_USDT", "1m")
    got: dict[str, object] = {}

    def read(name: str) -> None:
        try:
            got[name] = cache.get_klines(*key)
        except Exception as exc:  # pragma: no cover - the failure this test guards against
            got[name] = exc

    a = threading.Thread(target=read, args=("a",))
    a.start()
    wait_for_flight(cache, key)
    clock.advance(60)  # a newer candle closes while A's request runs
    b = threading.Thread(target=read, args=("b",))
    b.start()
    deadline = time.monotonic() + 10
    while cache._inflight.get(key) is None or cache._inflight[key].target <= 0:
        time.sleep(0.001)
        if time.monotonic() > deadline:  # pragma: no cover
            raise AssertionError("B never started its fetch")
    newer = cache._inflight[key]
    c = threading.Thread(target=read, args=("c",))
    c.start()
    wait_for_flight(cache, key, waiters=1)
    assert cache._inflight[key] is newer
    first.set()  # A lands first: it must not remove B's flight
    a.join(10)
    assert cache._inflight.get(key) is newer
    second.set()
    b.join(10)
    c.join(10)
    assert not (a.is_alive() or b.is_alive() or c.is_alive())
    assert got["b"] is got["c"]
    assert cache.latest_close_time(*key) == got["b"].last_close_time
    assert cache._inflight == {}


def test_readers_of_one_prefetch_count_one_use(exchange, clock):
    slow = CountingExchange(exchange)
    slow.gate = threading.Event()
    cache = SingleFlightCache(slow.fetch_klines, clock, 10)
    key = ("ETH/USDT", "1m")
    t = threading.Thread(target=cache.prefetch, args=key)
    t.start()
    wait_for_flight(cache, key)
    readers = [threading.Thread(target=cache.get_klines, args=key) for _ in range(3)]
    for r in readers:
        r.start()
    wait_for_flight(cache, key, waiters=3)
    slow.gate.set()
    for r in (*readers, t):
        r.join(10)
    stats = cache.stats()
    assert (stats.prefetches, stats.prefetches_used, stats.demand_hits) == (1, 1, 3)


def test_an_older_series_landing_late_does_not_replace_a_newer_one(exchange, clock):
    cache = SingleFlightCache(exchange.fetch_klines, clock, 10)
    older = exchange.fetch_klines("BTC_USDT", "1m", 600)
    clock.advance(60)
    newer = cache.get_klines("BTC_USDT", "1m")
    assert newer.last_close_time > older.last_close_time
    with cache._lock:
        cache._store_locked(("BTC_USDT", "1m"), older, prefetched=True)
    assert cache.get_klines("BTC_USDT", "1m") is newer
    assert cache.stats().prefetches_wasted == 1


def test_a_bounded_fetch_hands_the_reader_the_exchanges_own_error(counting, clock):
    cache = SingleFlightCache(counting.fetch_klines, clock, 4, fetch_timeout_s=5.0)
    assert cache.get_klines("BTC_USDT", "1m").symbol == "BTC_USDT"  # through its thread
    counting.fail = ExchangeError("HTTP 429")
    with pytest.raises(ExchangeError, match="429"):
        cache.get_klines("ETH/USDT", "1m")
    with pytest.raises(ValueError, match="fetch_timeout_s must be a positive number"):
        SingleFlightCache(counting.fetch_klines, clock, 4, fetch_timeout_s=0.0)


# -- the admission window (W-TinyLFU) -------------------------------------------------


def fill_main(cache, symbols, reads: int = 3) -> None:
    """Cache ``symbols`` on 1m, each read ``reads`` times: the frequent ones."""
    for _ in range(reads):
        for symbol in symbols:
            cache.get_klines(symbol, "1m")


def test_a_new_series_the_filter_would_refuse_is_kept_in_the_window(counting, clock):
    from tests.host.conftest import SYMBOLS

    cache = SingleFlightCache(counting.fetch_klines, clock, 4, window=1)
    fill_main(cache, SYMBOLS[:3])  # the main part (3) is full of frequent series
    assert cache.prefetch(SYMBOLS[0], "5m")  # a prefetch just ahead of its read
    cache.get_klines(SYMBOLS[0], "5m")  # read from the window: a hit, no request
    assert cache.stats().prefetches_used == 1
    assert len(counting.calls) == 4
    assert len(cache) == 4


def test_the_windows_oldest_series_competes_with_the_main_parts_least_recent(counting, clock):
    from tests.host.conftest import SYMBOLS

    cache = SingleFlightCache(counting.fetch_klines, clock, 4, window=1)
    fill_main(cache, SYMBOLS[:3])
    cache.get_klines(SYMBOLS[0], "5m")  # read once: in the window
    cache.get_klines(SYMBOLS[1], "5m")  # pushes it out; read less often: refused
    assert cache.extra_stats()["refused_admissions"] == 1
    assert cache.latest_close_time(SYMBOLS[0], "5m") is None
    for _ in range(5):  # read more often than any main series...
        cache.get_klines(SYMBOLS[1], "5m")
    cache.get_klines(SYMBOLS[2], "5m")  # ...so when pushed out, it displaces one
    assert cache.stats().evictions == 1
    assert cache.latest_close_time(SYMBOLS[1], "5m") is not None
    assert len(cache) == 4


def test_without_a_window_every_new_series_takes_the_filters_test(counting, clock):
    from tests.host.conftest import SYMBOLS

    cache = SingleFlightCache(counting.fetch_klines, clock, 4, window=0)
    fill_main(cache, SYMBOLS[:4])
    cache.prefetch(SYMBOLS[0], "5m")  # refused at once: its prefetch is wasted
    assert cache.stats().prefetches_wasted == 1
    assert cache.latest_close_time(SYMBOLS[0], "5m") is None


@pytest.mark.parametrize("window", [-1, 4, 5])
def test_a_window_outside_the_capacity_is_refused(counting, clock, window):
    with pytest.raises(ValueError, match="window"):
        SingleFlightCache(counting.fetch_klines, clock, 4, window=window)


def test_the_window_defaults_to_a_tenth_of_the_capacity(counting, clock):
    assert SingleFlightCache(counting.fetch_klines, clock, 360).window == 36
    assert SingleFlightCache(counting.fetch_klines, clock, 9).window == 0
