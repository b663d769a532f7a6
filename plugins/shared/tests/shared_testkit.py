"""Traders for the tests: real ``Plugins`` and ``SingleFlightCache`` over a counting exchange.

Imported by name (``conftest.py`` puts this directory on ``sys.path``), so that the
functions run by ``multiprocessing``'s spawned processes can be found in the children.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sltrader_plugins import (
    Config,
    Klines,
    Plugins,
    SingleFlightCache,
    last_close_time,
    timeframe_seconds,
)
from sltrader_plugins.manager import PluginManager
from sltrader_shared.plugin import SharedPlugin

T0 = 1_700_000_040.0  # a 1m candle close
CANDLES = 50
LIMIT = 600  # SingleFlightCache's default limit
SYMBOLS = ("BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL:USDT")
#: Settings under which nothing times out on a loaded machine: a test that must see
#: one fetch per series never depends on speed.
PATIENT = {"wait_ms": 60_000, "lease_ms": 60_000, "timeout_ms": 2000}


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def set(self, now: float) -> None:
        self.t = now


def warnings(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sltrader_shared" and r.levelno == logging.WARNING
    ]


def series(symbol: str, timeframe: str, limit: int, close: float) -> Klines:
    """The deterministic answer of the exchange: the newest ``min(limit, CANDLES)``
    candles closed by ``close``, random-looking floats (so bit identity means something)."""
    n = min(limit, CANDLES)
    step = timeframe_seconds(timeframe)
    seed = zlib.crc32(f"{symbol}|{timeframe}".encode()) ^ int(close)
    rng = np.random.default_rng(seed)
    open_time = close - step * np.arange(n, 0, -1, dtype=np.float64)
    price = 100 + np.cumsum(rng.normal(0, 1, n)) / 7
    high, low = price + rng.random(n), price - rng.random(n) / 3
    return Klines(symbol, timeframe, open_time, price, high, low, price * 1.001, rng.random(n))


def digest(klines: Klines) -> str:
    """The bytes of every array, hashed: equal digests are bit-identical series."""
    h = hashlib.sha256()
    for name in ("open_time", "open", "high", "low", "close", "volume"):
        h.update(np.ascontiguousarray(getattr(klines, name)).tobytes())
    return h.hexdigest()


class Exchange:
    """Answers ``series`` at the clock's last close and counts every fetch."""

    def __init__(self, clock: FakeClock, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.calls: Counter[tuple[str, str, float]] = Counter()
        self.fail = False
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def fetch(self, symbol: str, timeframe: str, limit: int) -> Klines:
        close = last_close_time(timeframe, self.clock.now())
        with self._lock:
            self.calls[(symbol, timeframe, close)] += 1
        if self.latency:
            time.sleep(self.latency)
        if self.fail:
            raise ConnectionError("the exchange is down")
        return series(symbol, timeframe, limit, close)


class ConstantModel:
    def predict(self, features: np.ndarray) -> float:
        return 0.5


class Trader:
    """One trader: a plugin manager with the shared plugin, a cache over its exchange."""

    def __init__(
        self,
        url: str,
        namespace: str,
        clock: FakeClock | None = None,
        latency: float = 0.0,
        fetch: Callable[[str, str, int], Klines] | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock or FakeClock()
        self.exchange = Exchange(self.clock, latency)
        manager = PluginManager()
        # Sharing alone too, unless a test says otherwise: most tests drive one trader's
        # Redis calls (test_step_aside.py tests the default).
        section = {"url": url, "namespace": namespace, "share_alone": True, **settings}
        manager.config = Config.from_mapping({"plugins": {"shared": section}})
        self.plugin = SharedPlugin()
        manager.register(self.plugin, "shared")
        self.plugins = Plugins(manager)
        self.cache = SingleFlightCache(
            self.plugins.fetching(fetch or self.exchange.fetch), self.clock, 1024
        )
        self.plugins.start(
            model=ConstantModel(),
            cache=self.cache,
            clock=self.clock,
            base_timeframe="1m",
            workers=8,
        )

    def read_all(self, symbols: Iterable[str], threads: int = 4, repeat: int = 3) -> dict[str, str]:
        """Reads every symbol ``repeat`` times from ``threads`` threads; digests by symbol."""
        work = [s for s in symbols for _ in range(repeat)]
        with ThreadPoolExecutor(threads) as pool:
            got = list(pool.map(lambda s: (s, digest(self.cache.get_klines(s, "1m"))), work))
        out: dict[str, str] = {}
        for symbol, d in got:
            assert out.setdefault(symbol, d) == d, f"{symbol}: two different series in one close"
        return out

    def metrics(self) -> dict[str, float]:
        return {k.removeprefix("shared."): v for k, v in self.plugins.metrics().items()}

    def close(self) -> None:
        self.plugins.close()


# -- processes (spawned: everything they take must pickle) ------------------------------


def reader_process(
    url: str,
    namespace: str,
    closes: list[float],
    threads: int,
    barrier: Any,
    results: Any,
    latency: float = 0.01,
) -> None:
    """A trader reading every symbol of ``SYMBOLS`` from ``threads`` threads at each close,
    in step with the others (``barrier``); reports its fetches, digests and metrics."""
    trader = Trader(url, namespace, latency=latency, **PATIENT)
    digests: dict[str, dict[str, str]] = {}
    try:
        for close in closes:
            trader.clock.set(close)
            barrier.wait(timeout=60)
            digests[repr(close)] = trader.read_all(SYMBOLS, threads=threads)
        results.put(
            {
                "pid": os.getpid(),
                "fetches": {repr(k): v for k, v in trader.exchange.calls.items()},
                "digests": digests,
                "metrics": trader.metrics(),
            }
        )
    finally:
        trader.close()


#: The lease of the holder that is killed: long enough to be there when the others ask.
HOLDER_LEASE_MS = 3000


def lease_holder_process(url: str, namespace: str, symbol: str, holding: Any) -> None:
    """Takes the lease of ``symbol`` at ``T0`` (its fetch never returns) and says so."""

    def hang(symbol: str, timeframe: str, limit: int) -> Klines:
        holding.set()
        time.sleep(600)  # killed long before
        raise AssertionError("not killed")

    trader = Trader(url, namespace, fetch=hang, **{**PATIENT, "lease_ms": HOLDER_LEASE_MS})
    trader.cache.get_klines(symbol, "1m")


def pacer_process(
    url: str,
    namespace: str,
    settings: Mapping[str, Any],
    threads: int,
    seconds: float,
    barrier: Any,
    results: Any,
) -> None:
    """``threads`` threads asking the budget for one request each, again and again, for
    ``seconds``; reports the wall-clock times of the grants."""
    trader = Trader(url, namespace, **settings)
    grants: list[float] = []
    lock = threading.Lock()
    try:
        barrier.wait(timeout=60)
        end = time.time() + seconds

        def ask() -> None:
            while time.time() < end:
                with trader.plugins.exchange_request():
                    pass
                granted = time.time()
                with lock:
                    grants.append(granted)

        workers = [threading.Thread(target=ask) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        results.put({"grants": grants, "metrics": trader.metrics()})
    finally:
        trader.close()
