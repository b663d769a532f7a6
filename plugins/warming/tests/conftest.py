"""A small but real kline cache and exchange, so these tests need only core + this plugin.

The cache implements the core's ``KlineCache`` protocol the way the design asks of any
host cache: freshness follows candle close, concurrent loads of one key fetch once,
demand reads are counted apart from prefetches, and nothing past the clock's now is
ever fetched.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from sltrader_plugins import CacheStats, Config, HostServices, last_close_time
from sltrader_plugins.manager import PluginManager
from sltrader_warming.config import WarmingConfig
from sltrader_warming.plugin import WarmingPlugin
from sltrader_warming.warmer import Warmer

Key = tuple[str, str]
T0 = 1_700_000_040.0  # a 1m candle close (and not a 5m one)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeExchange:
    """Returns the close time of the last candle closed at the clock's now; counts requests."""

    def __init__(self, clock: FakeClock, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.requests: Counter[Key] = Counter()
        self.fail: Callable[[Key], bool] = lambda key: False
        self._lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.fetches: list[tuple[Key, float, float]] = []  # (key, newest close, now)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def fetch(self, symbol: str, timeframe: str) -> float:
        key = (symbol, timeframe)
        now = self.clock.now()
        with self._lock:
            self.requests[key] += 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.latency:
                time.sleep(self.latency)
            if self.fail(key):
                raise ConnectionError(f"exchange refused {key}")
            newest = last_close_time(timeframe, now)
            with self._lock:
                self.fetches.append((key, newest, now))
            return newest
        finally:
            with self._lock:
                self.inflight -= 1


class SingleFlightCache:
    """A thread-safe kline cache keyed by ``(symbol, timeframe)`` (stores close times only)."""

    def __init__(self, clock: FakeClock, exchange: FakeExchange) -> None:
        self.clock = clock
        self.exchange = exchange
        self._lock = threading.Lock()
        self._latest: dict[Key, float] = {}
        self._inflight: dict[Key, threading.Event] = {}
        self._unread_prefetch: set[Key] = set()
        self.hits = self.misses = self.prefetches = self.used = self.wasted = 0

    def _fresh(self, key: Key, now: float) -> bool:
        latest = self._latest.get(key)
        return latest is not None and latest >= last_close_time(key[1], now)

    def _load(self, key: Key, prefetch: bool) -> bool:
        """Bring ``key`` up to date; True when this call went to the exchange."""
        while True:
            with self._lock:
                if self._fresh(key, self.clock.now()):
                    return False
                event = self._inflight.get(key)
                if event is None:
                    event = self._inflight[key] = threading.Event()
                    break
            event.wait()  # somebody else's fetch of this key: wait for it, do not refetch
        try:
            newest = self.exchange.fetch(*key)
            with self._lock:
                if prefetch:
                    self.prefetches += 1
                    if key in self._unread_prefetch:
                        self.wasted += 1
                    self._unread_prefetch.add(key)
                self._latest[key] = newest
        finally:
            with self._lock:
                self._inflight.pop(key).set()
        return True

    def read(self, symbol: str, timeframe: str) -> float:
        """A demand read (the host's own)."""
        key = (symbol, timeframe)
        went = self._load(key, prefetch=False)
        with self._lock:
            if went:
                self.misses += 1
            else:
                self.hits += 1
                if key in self._unread_prefetch:
                    self._unread_prefetch.discard(key)
                    self.used += 1
            return self._latest[key]

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        return self._load((symbol, timeframe), prefetch=True)

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        with self._lock:
            return self._latest.get((symbol, timeframe))

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                demand_hits=self.hits,
                demand_misses=self.misses,
                prefetches=self.prefetches,
                prefetches_used=self.used,
                prefetches_wasted=self.wasted,
            )


class ConstantModel:
    def predict(self, features: np.ndarray) -> float:
        return 0.5


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def exchange(clock: FakeClock) -> FakeExchange:
    return FakeExchange(clock)


@pytest.fixture
def cache(clock: FakeClock, exchange: FakeExchange) -> SingleFlightCache:
    return SingleFlightCache(clock, exchange)


@pytest.fixture
def make_warmer(cache: SingleFlightCache, clock: FakeClock) -> Iterator[Callable[..., Warmer]]:
    made: list[Warmer] = []

    def make(higher: tuple[str, ...] = ("5m", "15m", "1h"), **settings: Any) -> Warmer:
        warmer = Warmer(WarmingConfig(**settings), cache, clock, higher)
        made.append(warmer)
        return warmer

    yield make
    for warmer in made:
        warmer.close()


@pytest.fixture
def services(cache: SingleFlightCache, clock: FakeClock) -> HostServices:
    return HostServices(
        model=ConstantModel(),
        cache=cache,
        clock=clock,
        base_timeframe="1m",
        confirm_timeframes=("5m", "15m", "1h"),
        workers=8,
    )


@pytest.fixture
def start(services: HostServices) -> Callable[..., tuple[PluginManager, WarmingPlugin]]:
    """The plugin registered as ``name`` and started with ``section`` as its settings."""

    def start(
        section: Mapping[str, Any] | None = None, name: str = "warming"
    ) -> tuple[PluginManager, WarmingPlugin]:
        manager = PluginManager()
        manager.config = Config.from_mapping({"plugins": {name: dict(section or {})}})
        plugin = WarmingPlugin()
        manager.register(plugin, name)
        manager.start(services)
        return manager, plugin

    return start
