"""A counting fake exchange in front of the core's ``SingleFlightCache``.

The cache is the one every host can use (:class:`sltrader_plugins.SingleFlightCache`):
freshness follows candle close, concurrent loads of one key fetch once, demand reads are
counted apart from prefetches. The exchange serves tiny constant-price series ending at
the last candle closed by the clock's now, so nothing past now is ever fetched, and it
counts every request so the tests can assert what reached it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest

import sltrader_warming.warmer as warmer_module
from sltrader_plugins import (
    Config,
    HostServices,
    Klines,
    SingleFlightCache,
    last_close_time,
    timeframe_seconds,
)
from sltrader_plugins.manager import PluginManager
from sltrader_warming.config import WarmingConfig
from sltrader_warming.plugin import WarmingPlugin
from sltrader_warming.warmer import Warmer

Key = tuple[str, str]
T0 = 1_700_000_040.0  # a 1m candle close (and not a 5m one)

#: Series the test cache holds at most. No test here holds more than 40 (the budget test's
#: 40 symbols), so nothing is evicted or refused admission unless a test builds a smaller
#: cache on purpose (``make_cache``). The tracker's million-symbol tests use no cache.
CAPACITY = 1024
#: Candles per fetched series: the warmer only looks at close times.
CANDLES = 3
#: The hooks' wait bound in these tests (``PREFETCH_WAIT_S``), unless a test of hung
#: prefetches sets a short one. Generous: a prefetch that returns is never abandoned,
#: however loaded the machine, so no test depends on the cache being fast.
GENEROUS_WAIT_S = 30.0


@pytest.fixture(autouse=True)
def set_bound(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Sets the hooks' wait bound (by default the generous one); a test can call it to
    change it, also midway."""

    def set_bound(seconds: float = GENEROUS_WAIT_S) -> None:
        # raising=False: run against a warmer without the bound (to see these tests fail
        # without it), they fail on their asserts, not here.
        monkeypatch.setattr(warmer_module, "PREFETCH_WAIT_S", seconds, raising=False)

    set_bound()
    return set_bound


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeExchange:
    """Serves the candles closed at the clock's now (constant prices); counts requests."""

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

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        """The newest ``min(limit, CANDLES)`` closed candles of ``(symbol, timeframe)``."""
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
            n = min(limit, CANDLES)
            # The last candle opens one interval before ``newest`` and closes at it.
            open_time = newest - timeframe_seconds(timeframe) * np.arange(n, 0, -1)
            ones = np.ones(n)
            klines = Klines(symbol, timeframe, open_time, ones, ones, ones, ones, ones)
            with self._lock:
                self.fetches.append((key, newest, now))
            return klines
        finally:
            with self._lock:
                self.inflight -= 1


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
def make_cache(clock: FakeClock, exchange: FakeExchange) -> Callable[..., SingleFlightCache]:
    """A new core cache over the fixtures' exchange and clock (``capacity`` series)."""

    def make(capacity: int = CAPACITY) -> SingleFlightCache:
        return SingleFlightCache(exchange.fetch_klines, clock, capacity)

    return make


@pytest.fixture
def cache(make_cache: Callable[..., SingleFlightCache]) -> SingleFlightCache:
    return make_cache()


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


def services_over(cache: Any, clock: Any, workers: int = 8) -> HostServices:
    """The services a host of base 1m, confirming on 5m, 15m and 1h, gives the plugin."""
    return HostServices(
        model=ConstantModel(),
        cache=cache,
        clock=clock,
        base_timeframe="1m",
        confirm_timeframes=("5m", "15m", "1h"),
        workers=workers,
    )


@pytest.fixture
def services(cache: SingleFlightCache, clock: FakeClock) -> HostServices:
    return services_over(cache, clock)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """What a hung call waits for: opened when the test ends (or by the test)."""
    gate = threading.Event()
    yield gate
    gate.set()


@pytest.fixture
def start(services: HostServices) -> Callable[..., tuple[PluginManager, WarmingPlugin]]:
    """The plugin registered as ``name`` and started with ``section`` as its settings."""

    def start(
        section: Mapping[str, Any] | None = None, name: str = "warming"
    ) -> tuple[PluginManager, WarmingPlugin]:
        manager = PluginManager()
        manager.config = Config.from_mapping(
            {"plugins": {name: {"step_aside": False, **(section or {})}}}
        )
        plugin = WarmingPlugin()
        manager.register(plugin, name)
        manager.start(services)
        return manager, plugin

    return start
