"""Faults of the cache, injected under a real PluginManager: nothing stalls the loop,
nothing kills it, and each fault is counted and logged once.

The cache is the conftest's ``SingleFlightCache`` behind :class:`FaultyCache`, whose
``prefetch``, ``latest_close_time`` or ``stats`` misbehaves on demand; the host's own
demand reads (``get_klines``) always go straight through, as they would in a trader
whose exchange is fine but whose cache wrapper is not.

Every hook is called on a helper thread and must return within the bound plus
:data:`SLACK_S`. The slack is generous on purpose (the machine may be loaded): the
hangs here last until the test ends, so a hook that waits for them never returns, and
any finite allowance tells the two apart. The bound is the conftest's generous one,
except where only hung prefetches can be waited for: there it is :data:`SHORT_WAIT_S`,
so that those tests stay quick without depending on anything being fast.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import sltrader_warming.warmer as warmer_module
from sltrader_plugins import CacheStats, Config, HostServices, Signal
from sltrader_plugins.manager import PluginManager
from sltrader_warming.plugin import WarmingPlugin

#: The hooks' wait bound where the only prefetches a hook can wait for hang.
SHORT_WAIT_S = 0.3
#: What a hook may take beyond the bound before it counts as stalled.
SLACK_S = 15.0
SYMBOLS = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL-USD", "XRP/USDT", "DOGE_USDT"]
HIGHER = ("5m", "15m", "1h")

Key = tuple[str, str]
Fault = Callable[[str, str], Any]


class FaultyCache:
    """The test cache with injectable faults (``None``: the call goes through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.prefetch_fault: Fault | None = None
        self.latest_fault: Fault | None = None
        self.stats_fault: Callable[[], Any] | None = None
        self.prefetched: Counter[Key] = Counter()  # prefetch calls, faulty or not
        self._lock = threading.Lock()

    def get_klines(self, symbol: str, timeframe: str) -> Any:
        return self.inner.get_klines(symbol, timeframe)

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        with self._lock:
            self.prefetched[(symbol, timeframe)] += 1
        if self.prefetch_fault is not None:
            return self.prefetch_fault(symbol, timeframe)  # type: ignore[no-any-return]
        return self.inner.prefetch(symbol, timeframe)  # type: ignore[no-any-return]

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        if self.latest_fault is not None:
            return self.latest_fault(symbol, timeframe)  # type: ignore[no-any-return]
        return self.inner.latest_close_time(symbol, timeframe)  # type: ignore[no-any-return]

    def stats(self) -> Any:
        if self.stats_fault is not None:
            return self.stats_fault()
        return self.inner.stats()


class Host:
    """The plugin under a real manager, driven as the host's main loop drives it."""

    def __init__(self, manager: PluginManager, cache: FaultyCache, clock: Any) -> None:
        self.manager = manager
        self.cache = cache
        self.clock = clock
        self.hook_s: dict[str, float] = {}  # the slowest call of each hook

    def call(self, hook: str, **kwargs: Any) -> Any:
        """Call ``hook`` on a helper thread; fail if it has not returned in time."""
        result: list[Any] = []

        def run() -> None:
            started = time.monotonic()
            result.append(getattr(self.manager.hook, hook)(**kwargs))
            elapsed = time.monotonic() - started
            self.hook_s[hook] = max(self.hook_s.get(hook, 0.0), elapsed)

        # A daemon, so that even a hook stalled for good cannot keep pytest from exiting.
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        limit = getattr(warmer_module, "PREFETCH_WAIT_S", 0.0) + SLACK_S
        thread.join(limit)
        if thread.is_alive():
            raise AssertionError(f"{hook} still blocked after {limit} s")
        return result[0]

    def scan(self, symbols: list[str] = SYMBOLS) -> None:
        """The hooks around a scan, and the scan's demand reads between them."""
        now = self.clock.now()
        self.call("before_scan", symbols=symbols, timeframe="1m", now=now)
        for symbol in symbols:
            assert self.cache.get_klines(symbol, "1m").last_close_time <= now
        self.call("on_scan_complete", symbols=symbols, timeframe="1m", now=now)

    def signal(self, symbol: str) -> None:
        """A candidate's confirmation reads, then its signal."""
        now = self.clock.now()
        for tf in HIGHER:
            self.cache.get_klines(symbol, tf)
        signal = Signal(symbol=symbol, timeframe="1m", side="buy", probability=0.7, time=now)
        self.call("on_signal", symbol=symbol, signal=signal, timeframe="1m")

    def close(self) -> None:
        """The next 1m close (a 5m one every five minutes)."""
        self.clock.advance(60)
        close = self.clock.now()
        self.call("on_candle_close", timeframe="1m", close_time=close, next_scan_time=close + 10)

    def cycle(self, symbols: list[str] = SYMBOLS) -> None:
        """One round of the loop: a scan, a signal, a candle close."""
        self.scan(symbols)
        self.signal(symbols[1])
        self.close()

    def metrics(self) -> dict[str, float]:
        metrics = self.call("report_metrics")
        assert len(metrics) == 1  # only this plugin: its one mapping
        return {name.removeprefix("warming."): value for name, value in metrics[0].items()}

    def shutdown(self) -> None:
        self.call("on_shutdown")


@pytest.fixture
def faulty(cache: Any) -> FaultyCache:
    return FaultyCache(cache)


@pytest.fixture
def host(faulty: FaultyCache, clock: Any) -> Callable[..., Host]:
    def start(**section: Any) -> Host:
        manager = PluginManager()
        manager.config = Config.from_mapping(
            {"plugins": {"warming": {"step_aside": False, **section}}}
        )
        manager.register(WarmingPlugin(), "warming")
        services = HostServices(
            model=None,  # type: ignore[arg-type]  # the warmer never predicts
            cache=faulty,
            clock=clock,
            base_timeframe="1m",
            workers=8,
            confirm_timeframes=HIGHER,
        )
        manager.start(services)
        return Host(manager, faulty, clock)

    return start


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sltrader_warming"]


def hang(gate: threading.Event) -> Fault:
    def prefetch(symbol: str, timeframe: str) -> bool:
        gate.wait()
        return False

    return prefetch


def _raise(error: Exception) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        raise error

    return call


def _nan_stats() -> CacheStats:
    return CacheStats(prefetches_used=math.nan)  # type: ignore[arg-type]


# -- every fault: bounded hooks, a loop that goes on, counted, logged once --------------

FAULTS: dict[str, tuple[str, Any, str]] = {
    # name: (what is faulty, the fault, the metric that counts it)
    "prefetch raises": ("prefetch", _raise(ConnectionError("exchange down")), "failures"),
    "prefetch returns None": ("prefetch", lambda s, tf: None, "failures"),
    "prefetch returns a string": ("prefetch", lambda s, tf: "yes", "failures"),
    "prefetch returns an int": ("prefetch", lambda s, tf: 1, "failures"),
    "prefetch hangs": ("prefetch", "hang", "abandoned"),
    "latest_close_time raises": ("latest", _raise(RuntimeError("cache down")), "failures"),
    "latest_close_time returns NaN": ("latest", lambda s, tf: math.nan, "failures"),
    "latest_close_time returns inf": ("latest", lambda s, tf: math.inf, "failures"),
    "latest_close_time returns a string": ("latest", lambda s, tf: "1700000040", "failures"),
    "latest_close_time returns a bool": ("latest", lambda s, tf: True, "failures"),
    "stats raises": ("stats", _raise(RuntimeError("no stats")), "failures"),
    "stats returns garbage": ("stats", lambda: object(), "failures"),
    "stats returns NaN": ("stats", _nan_stats, "failures"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_is_bounded_counted_and_logged_once(
    name: str,
    host: Callable[..., Host],
    faulty: FaultyCache,
    gate: threading.Event,
    caplog: pytest.LogCaptureFixture,
    set_bound: Callable[..., None],
) -> None:
    where, fault, metric = FAULTS[name]
    if fault == "hang":
        fault = hang(gate)
        set_bound(SHORT_WAIT_S)
    setattr(faulty, f"{where}_fault", fault)
    h = host(warm_threshold=1, max_parallel=2, cooldown_s=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            h.cycle()
            metrics = h.metrics()
            assert metrics[metric] > 0
        warnings = warnings_of(caplog)
    # The loop went on: every hook returned within the bound (Host.call), every demand
    # read was served (Host.cycle), the manager saw no fault, and nothing else was lost.
    assert h.manager.faults() == {}
    assert metrics["tracked_keys"] > 0
    assert len(warnings) == 1, warnings
    assert f"(metric warming.{metric})" in warnings[0]
    if where != "stats":
        assert {"prefetches_used", "prefetches_wasted"} <= set(metrics)
    h.shutdown()  # bounded too, hung prefetch or not
    assert h.manager.faults() == {}


def test_latest_close_time_none_is_an_answer_not_a_fault(
    host: Callable[..., Host], faulty: FaultyCache, exchange: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # ``None`` means "not cached" (the protocol's word), not a fault: a cache that always
    # says so gets each scan's symbols prefetched just before it, and nothing refreshed.
    faulty.latest_fault = lambda s, tf: None
    h = host(warm_threshold=1)
    with caplog.at_level(logging.WARNING):
        h.cycle()
        requests = exchange.total
        h.cycle()
    metrics = h.metrics()
    assert metrics["failures"] == 0 and warnings_of(caplog) == []
    assert metrics["new_symbol_warms"] == 2 * len(SYMBOLS)
    assert metrics["refreshes"] == 0  # nothing it holds, so nothing stale to refresh
    # After the close, one request per symbol: the request the scan would have made (it
    # hit instead), and the confirmation's of the 5m and 15m series that closed with it.
    assert exchange.total - requests == len(SYMBOLS) + 2
    assert h.manager.faults() == {}


# -- a prefetch that hangs -------------------------------------------------------------


def test_hung_prefetches_are_abandoned_never_more_than_max_parallel(
    host: Callable[..., Host],
    faulty: FaultyCache,
    gate: threading.Event,
    set_bound: Callable[..., None],
) -> None:
    set_bound(SHORT_WAIT_S)
    faulty.prefetch_fault = hang(gate)
    earlier = set(threading.enumerate())  # an earlier test's threads may not have ended
    h = host(warm_threshold=1, max_parallel=2, cooldown_s=0)
    h.scan()  # its before_scan started two (max_parallel) and stopped waiting for them
    # With both threads still held, later hooks start nothing and return at once; one
    # that waited for a thread instead would now overrun the manager's own bound (10 s).
    set_bound()
    h.signal("ETH/USDT")
    h.close()
    for _ in range(3):
        h.cycle()
    metrics = h.metrics()
    assert sum(faulty.prefetched.values()) == 2
    assert metrics["abandoned"] == 2
    assert metrics["prefetch_calls"] == 2
    assert metrics["stalled_skips"] >= len(SYMBOLS) - 2 + 3 * len(SYMBOLS)
    threads = [
        t for t in threading.enumerate() if t.name == "sltrader-warming" and t not in earlier
    ]
    assert len(threads) == 2 and all(t.daemon for t in threads)
    set_bound(SHORT_WAIT_S)  # shutdown waits for the hung ones
    h.shutdown()
    assert h.manager.faults() == {}  # no hook overran the manager's own bound either


def test_a_key_still_being_fetched_is_not_fetched_again(
    host: Callable[..., Host],
    faulty: FaultyCache,
    gate: threading.Event,
    set_bound: Callable[..., None],
) -> None:
    def hang_one(symbol: str, timeframe: str) -> bool:
        if symbol == "HUNG/USDT":
            gate.wait()
        return faulty.inner.prefetch(symbol, timeframe)  # type: ignore[no-any-return]

    faulty.prefetch_fault = hang_one
    h = host(warm_threshold=1, cooldown_s=0, warm_new_symbols=False)
    set_bound(SHORT_WAIT_S)  # the first close waits for the hung key alone
    h.scan(["HUNG/USDT"])
    h.close()
    assert h.metrics()["abandoned"] == 1
    set_bound()  # the generous one: the others' prefetches all return
    symbols = ["HUNG/USDT", "FINE_USDT", "OK-USD"]
    for _ in range(3):
        h.cycle(symbols)
    # The hung key was called once and skipped at every later close; the others were
    # refreshed at each of the three closes after their scans.
    assert faulty.prefetched[("HUNG/USDT", "1m")] == 1
    assert faulty.prefetched[("FINE_USDT", "1m")] == 3
    assert faulty.prefetched[("OK-USD", "1m")] == 3
    metrics = h.metrics()
    assert metrics["abandoned"] == 1
    assert metrics["stalled_skips"] == 3
    set_bound(SHORT_WAIT_S)  # shutdown waits for the hung key
    h.shutdown()
    assert h.manager.faults() == {}


def test_slow_prefetch_finishes_late_and_warming_resumes(
    host: Callable[..., Host],
    faulty: FaultyCache,
    gate: threading.Event,
    exchange: Any,
    set_bound: Callable[..., None],
) -> None:
    def slow(symbol: str, timeframe: str) -> bool:
        gate.wait(timeout=60)  # slower than the bound; the test ends it sooner
        return faulty.inner.prefetch(symbol, timeframe)  # type: ignore[no-any-return]

    faulty.prefetch_fault = slow
    h = host(warm_threshold=1, max_parallel=2, cooldown_s=0)
    set_bound(SHORT_WAIT_S)
    h.scan()  # the new symbols' prefetches overrun: two started and abandoned
    assert h.metrics()["abandoned"] == 2
    set_bound()
    # The slow calls return in the next budget cycle, to series the scan has read since.
    gate.set()
    deadline = time.monotonic() + SLACK_S
    while h.metrics()["already_fresh"] < 2:
        assert time.monotonic() < deadline, "the late prefetches never finished"
        time.sleep(0.01)
    # Their keys and threads are free again: the next close refreshes every series.
    h.signal("ETH/USDT")
    before = exchange.total
    h.close()
    metrics = h.metrics()
    assert exchange.total - before == len(SYMBOLS) + 2  # and ETH/USDT's 5m and 15m
    assert metrics["prefetches"] == len(SYMBOLS) + 2
    assert metrics["abandoned"] == 2
    assert metrics["stalled_skips"] == len(SYMBOLS) - 2  # the before_scan's unstarted ones
    h.shutdown()
    assert h.manager.faults() == {}


def test_shutdown_waits_at_most_the_bound_for_a_hung_prefetch(
    host: Callable[..., Host],
    faulty: FaultyCache,
    gate: threading.Event,
    caplog: pytest.LogCaptureFixture,
    set_bound: Callable[..., None],
) -> None:
    set_bound(SHORT_WAIT_S)
    faulty.prefetch_fault = hang(gate)
    h = host()
    h.scan()
    assert h.metrics()["abandoned"] == len(SYMBOLS)
    with caplog.at_level(logging.WARNING):
        h.shutdown()  # Host.call fails if it waits for them
    running = f"were abandoned in this run, {len(SYMBOLS)} still running"
    assert running in caplog.text
    assert h.manager.faults() == {}


HUNG_SCRIPT = """
    import threading, time

    import sltrader_warming.warmer as w
    from sltrader_plugins import CacheStats
    from sltrader_warming.config import WarmingConfig

    w.PREFETCH_WAIT_S = 0.2

    class Clock:
        def now(self):
            return 1_700_000_040.0

    class HungCache:
        def prefetch(self, symbol, timeframe):
            threading.Event().wait()  # forever

        def latest_close_time(self, symbol, timeframe):
            return None

        def stats(self):
            return CacheStats()

    warmer = w.Warmer(WarmingConfig(), HungCache(), Clock(), ())
    warmer.warm_universe(["BTC_USDT", "ETH/USDT", "1000PEPE-USD"], "1m")
    warmer.close()
    print("closed", time.time(), flush=True)
"""


def test_a_hung_prefetch_never_keeps_the_process_from_exiting() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HUNG_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running 60 s later; printed {out!r}")
    exited = time.time()
    assert proc.returncode == 0, err
    word, closed = out.split()
    assert word == "closed"
    assert exited - float(closed) < 20  # a few seconds at most, on a loaded machine
