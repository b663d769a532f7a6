"""The warming policy and its execution.

When a candle of some timeframe has closed, every cached series of that timeframe is
stale; the host's next read of it would go to the exchange inside a scan. The warmer
spends the host's idle time between scans refreshing, in parallel, the hottest of those
keys (by tracked score, above a threshold, each at most once per cooldown), within a
per-cycle request budget. On a signal it also refreshes the symbol's higher timeframes.

Nothing here looks ahead: a key is refreshed only once a candle of its timeframe has
closed by the clock's now and the cached series is older than that candle, and the
cache's ``prefetch`` itself never fetches past now.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from sltrader_plugins import Clock, KlineCache, close_boundary, last_close_time
from sltrader_warming.config import WarmingConfig
from sltrader_warming.tracker import AccessTracker, Candidate, Key

log = logging.getLogger("sltrader_warming")


@attrs.define
class _Counters:
    prefetch_calls: int = 0  #: prefetch calls made
    prefetches: int = 0  #: calls that made an exchange request
    already_fresh: int = 0  #: calls the cache answered without a request
    failures: int = 0  #: calls that raised
    budget_refusals: int = 0  #: stale hot keys not refreshed for want of budget
    cooldown_skips: int = 0  #: stale hot keys skipped because refreshed too recently
    signal_warms: int = 0  #: prefetch calls made because of a signal
    new_symbol_warms: int = 0  #: prefetch calls for scanned symbols the cache lacked
    refreshes: int = 0  #: candle closes that refreshed something
    refresh_s: float = 0.0  #: wall time spent refreshing (host idle time)


class Warmer:
    """Tracks accesses and refreshes hot stale keys through ``cache.prefetch``.

    The hooks that drive it are called from the host's main loop, one at a time; the
    lock guards the tracker and counters against ``metrics()`` from another thread and
    against the prefetch threads' bookkeeping. Prefetches never run under it.

    :param name: the name the plugin was loaded under, to name its metrics in messages.
    """

    def __init__(
        self,
        config: WarmingConfig,
        cache: KlineCache,
        clock: Clock,
        higher_timeframes: Sequence[str],
        name: str | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.cache = cache
        self.clock = clock
        self.higher_timeframes = tuple(higher_timeframes)
        self.tracker = AccessTracker(config.max_tracked, config.recency_candles)
        self.counters = _Counters()
        self._lock = threading.Lock()
        self._budget_used = 0
        self._scan_timeframes: set[str] = set()
        self._probed: dict[str, float] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._failure_logged = False

    # -- events ---------------------------------------------------------------------

    def record_scan(self, symbols: Sequence[str], timeframe: str, now: float) -> None:
        """A scan read ``(symbol, timeframe)`` for every symbol; a new budget cycle starts."""
        with self._lock:
            self.tracker.record_many(symbols, timeframe, self.config.scan_weight, now)
            self._scan_timeframes.add(timeframe)
            self._budget_used = 0

    def warm_universe(self, symbols: Sequence[str], timeframe: str) -> int:
        """A scan of ``symbols`` is about to start: fetch those the cache does not hold.

        These are symbols that entered the universe (or were evicted): the scan is certain
        to read them next, so the prefetch costs no extra request and is never wasted. The
        host times ``before_scan`` as part of the scan, so this gains scan time only by
        fetching in parallel ahead of the workers. Returns the prefetch calls made.
        """
        if not self.config.warm_new_symbols:
            return 0
        started = time.perf_counter()
        now = self.clock.now()
        absent = [(s, timeframe) for s in symbols if self._state(s, timeframe, now) == "absent"]
        chosen = self._admit(absent, now, cooldown=False)
        calls = self._execute(chosen) if chosen else 0
        with self._lock:
            self.counters.new_symbol_warms += calls
            self.counters.refresh_s += time.perf_counter() - started
        return calls

    def record_signal(self, symbol: str, timeframe: str) -> None:
        """``symbol`` signalled: weigh it up and refresh its stale higher timeframes now."""
        now = self.clock.now()
        weight = self.config.signal_weight
        with self._lock:
            self.tracker.record(symbol, timeframe, weight, now)
            for tf in self.higher_timeframes:
                self.tracker.record(symbol, tf, weight, now)
        # The threshold does not apply: the signal is the evidence that these series will
        # be read (the next confirmation of this symbol reads them). Usually they are fresh,
        # the confirmation having just read them, and this costs nothing.
        keys = [
            (symbol, tf) for tf in self.higher_timeframes if self._state(symbol, tf, now) == "stale"
        ]
        chosen = self._admit(keys, now)
        if chosen:
            with self._lock:
                self.counters.signal_warms += len(chosen)
            self._execute(chosen)

    def refresh(self, timeframe: str, close_time: float, next_scan_time: float) -> int:
        """A candle of ``timeframe`` closed: refresh the hottest keys that went stale.

        Every tracked timeframe whose candle has closed by now is considered, so a host
        that reports only its base timeframe's closes still gets its higher timeframes
        warmed. Returns the number of prefetch calls made.
        """
        started = time.perf_counter()
        now = self.clock.now()
        cfg = self.config
        with self._lock:
            tracked = {
                (c.symbol, c.timeframe): c
                for c in self.tracker.candidates()
                if self.tracker.is_active(c.timeframe, c.last_access, now)
            }
            hot = [c for c in tracked.values() if c.score >= cfg.warm_threshold]
            probes = self._probes(tracked, now)
        # Only series the cache holds and that a candle close made stale: a key the cache
        # does not hold was evicted or refused admission, and refetching it would most
        # likely be refused again (a wasted request) or push out a hotter series.
        # Asked outside the lock: the cache has its own, and we never nest them.
        stale = [c for c in hot if self._state(c.symbol, c.timeframe, now) == "stale"]
        stale += [c for c in probes if self._state(c.symbol, c.timeframe, now) == "stale"]
        hottest = heapq.nlargest(cfg.top_k, stale, key=lambda c: c.score)
        chosen = self._admit([(c.symbol, c.timeframe) for c in hottest], now)
        calls = self._execute(chosen) if chosen else 0
        with self._lock:
            if calls:
                self.counters.refreshes += 1
            self.counters.refresh_s += time.perf_counter() - started
        return calls

    def _probes(self, tracked: dict[Key, Candidate], now: float) -> list[Candidate]:
        """Higher-timeframe keys of the scanned symbols whose candle just closed.

        The host reads a symbol's higher timeframes when it is a candidate, which the
        warmer only hears about when the candidate becomes a signal. A series the cache
        still holds was read recently enough to be admitted and kept, so once its candle
        closes it is worth refreshing like a tracked one. Caller holds the lock.
        """
        if not self.config.probe_higher_timeframes:
            return []
        due = []
        for tf in self.higher_timeframes:
            closed = last_close_time(tf, now)
            if closed > self._probed.get(tf, float("-inf")):
                self._probed[tf] = closed
                due.append(tf)
        if not due:
            return []
        probes = []
        for symbol, timeframe in tracked:
            if timeframe not in self._scan_timeframes:
                continue
            for tf in due:
                if (symbol, tf) not in tracked:
                    probes.append(Candidate(symbol, tf, self.tracker.score(symbol, tf), now, None))
        return probes

    # -- policy ---------------------------------------------------------------------

    def _state(self, symbol: str, timeframe: str, now: float) -> str:
        """``"fresh"``, ``"stale"`` (cached, a newer candle has closed) or ``"absent"``."""
        try:
            latest = self.cache.latest_close_time(symbol, timeframe)
        except Exception:
            # A cache that cannot answer gets no prefetch for this key; the loop goes on.
            self._count_failure(symbol, timeframe)
            return "fresh"
        if latest is None:
            return "absent"
        # A trader's own cache may state close times as exchanges do (open + interval -
        # 1 ms): rounded up to the boundary, such a series holds the last closed candle.
        closed = last_close_time(timeframe, now)
        return "stale" if close_boundary(timeframe, latest) < closed else "fresh"

    def _admit(self, keys: Sequence[Key], now: float, cooldown: bool = True) -> list[Key]:
        """Apply cooldown and budget; reserve one request per admitted key."""
        cfg = self.config
        chosen: list[Key] = []
        with self._lock:
            for symbol, timeframe in keys:
                last = self.tracker.last_warm(symbol, timeframe)
                if cooldown and last is not None and now - last < cfg.cooldown_s:
                    self.counters.cooldown_skips += 1
                    continue
                if self._budget_used >= cfg.request_budget:
                    self.counters.budget_refusals += 1
                    continue
                # Reserved before the call, so concurrent prefetches can never overshoot.
                self._budget_used += 1
                # The cooldown starts at the attempt: a key that fails is not hammered.
                self.tracker.mark_warmed(symbol, timeframe, now)
                chosen.append((symbol, timeframe))
        return chosen

    # -- execution ------------------------------------------------------------------

    def _execute(self, keys: Sequence[Key]) -> int:
        if len(keys) == 1 or self.config.max_parallel == 1:
            for key in keys:
                self._prefetch_one(key)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.max_parallel, thread_name_prefix="sltrader-warming"
                )
            # Wait for all: the refresh belongs to the idle time it was called in, and no
            # prefetch may outlive the hook into the next scan's accounting.
            for _ in self._executor.map(self._prefetch_one, keys):
                pass
        return len(keys)

    def _prefetch_one(self, key: Key) -> None:
        symbol, timeframe = key
        try:
            requested = self.cache.prefetch(symbol, timeframe)
        except Exception:
            with self._lock:
                self.counters.prefetch_calls += 1
            self._count_failure(symbol, timeframe)
            return
        with self._lock:
            self.counters.prefetch_calls += 1
            if requested:
                self.counters.prefetches += 1
            else:
                # The series was fresh after all (a demand read got there first): no
                # request was made, so the reservation goes back to the budget.
                self.counters.already_fresh += 1
                self._budget_used -= 1

    def _count_failure(self, symbol: str, timeframe: str) -> None:
        with self._lock:
            self.counters.failures += 1
            first = not self._failure_logged
            self._failure_logged = True
        if first:
            # Called from an ``except`` block, so exc_info carries the cause.
            metric = "failures" if self.name is None else f"{self.name}.failures"
            log.warning(
                "cache call for %r on %s failed; further failures are only counted (metric %s)",
                symbol,
                timeframe,
                metric,
                exc_info=True,
            )

    # -- reporting and lifecycle ------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        with self._lock:
            c = attrs.asdict(self.counters)
            tracked = len(self.tracker)
            resets = self.tracker.sketch.resets
            refused = self.tracker.admissions_refused
        # The cache knows which prefetched series were read before going stale; every
        # prefetch the cache sees is this plugin's, since the host never prefetches.
        stats = self.cache.stats()
        # Unprefixed: the manager prefixes each name with the plugin's.
        return {
            "prefetches": float(c["prefetches"]),
            "prefetches_used": float(stats.prefetches_used),
            "prefetches_wasted": float(stats.prefetches_wasted),
            "budget_refusals": float(c["budget_refusals"]),
            "failures": float(c["failures"]),
            "prefetch_calls": float(c["prefetch_calls"]),
            "already_fresh": float(c["already_fresh"]),
            "cooldown_skips": float(c["cooldown_skips"]),
            "signal_warms": float(c["signal_warms"]),
            "new_symbol_warms": float(c["new_symbol_warms"]),
            "refreshes": float(c["refreshes"]),
            "refresh_s": float(c["refresh_s"]),
            "tracked_keys": float(tracked),
            "sketch_resets": float(resets),
            "admissions_refused": float(refused),
        }

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        if self.counters.failures:
            log.warning("%d cache call(s) of the warmer failed in this run", self.counters.failures)
