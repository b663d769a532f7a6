"""The warming policy and its execution.

When a candle of some timeframe has closed, every cached series of that timeframe is
stale; the host's next read of it would go to the exchange inside a scan. The warmer
spends the host's idle time between scans refreshing, in parallel, the hottest of those
keys (by tracked score, above a threshold, each at most once per cooldown), within a
per-cycle request budget. On a signal it also refreshes the symbol's higher timeframes.
When the trader fetches one confirmation series of a symbol (a candidate being confirmed),
the warmer fetches the symbol's other confirmation series at once, beside it, without
waiting: the trader reads them next, one after the other.

Nothing here looks ahead: a key is refreshed only once a candle of its timeframe has
closed by the clock's now and the cached series is older than that candle, and the
cache's ``prefetch`` itself never fetches past now.

Nothing here stalls the loop either: a hook waits at most :data:`PREFETCH_WAIT_S` for its
prefetches, which run on daemon threads; one that overruns is abandoned (left to finish on
its thread, counted), and a cache call that raises or answers garbage is counted, logged
once and otherwise ignored.
"""

from __future__ import annotations

import heapq
import logging
import math
import numbers
import threading
import time
from collections.abc import Sequence

import attrs
import numpy as np

from sltrader_plugins import (
    Clock,
    DaemonThreads,
    KlineCache,
    Tally,
    close_boundary,
    last_close_time,
)
from sltrader_warming.config import WarmingConfig
from sltrader_warming.tracker import AccessTracker, Candidate, Key

log = logging.getLogger("sltrader_warming")

#: The longest a hook waits for its prefetches, in seconds (wall time). Those still running
#: then are abandoned: the hook returns and they finish, or hang, on their own daemon
#: threads. Until ``WarmingConfig`` has a setting for it, a module constant.
PREFETCH_WAIT_S = 2.0
#: A prefetch thread waits this long for the next batch, then ends.
THREAD_IDLE_S = 10.0


@attrs.define
class _Counters:
    prefetch_calls: int = 0  #: prefetch calls made
    prefetches: int = 0  #: calls that made an exchange request
    already_fresh: int = 0  #: calls the cache answered without a request
    failures: int = 0  #: cache calls that raised or answered garbage
    abandoned: int = 0  #: prefetches still running when their hook stopped waiting
    #: prefetches not made for a slow cache: not started when their hook stopped waiting,
    #: or their key (or every thread) still held by an abandoned prefetch
    stalled_skips: int = 0
    budget_refusals: int = 0  #: stale hot keys not refreshed for want of budget
    cooldown_skips: int = 0  #: stale hot keys skipped because refreshed too recently
    signal_warms: int = 0  #: prefetch calls made because of a signal
    #: prefetches of a candidate's other confirmation series, as the trader fetched one
    follow_warms: int = 0
    new_symbol_warms: int = 0  #: prefetch calls for scanned symbols the cache lacked
    refreshes: int = 0  #: candle closes that refreshed something
    refresh_s: float = 0.0  #: wall time spent refreshing (host idle time)


@attrs.define(eq=False)
class _Batch:
    """The prefetches of one hook call, taken in order by its threads (under the lock)."""

    keys: list[Key]
    cycle: int  #: the budget cycle that reserved their requests
    waited: bool = True  #: a hook waits for it (else nobody does: it is never abandoned)
    next: int = 0  #: index of the next key to start
    running: set[Key] = attrs.Factory(set)
    expired: bool = False  #: the hook stopped waiting: start nothing more
    threads: int = 0  #: its threads not yet left (each holds one of the warmer's live ones)

    @property
    def done(self) -> bool:
        # Its threads gone too: the next hook call finds them free, not "all busy".
        return self.next == len(self.keys) and not self.threads


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
        # Notified when a batch's last prefetch ends, or an abandoned one: wakes the hook
        # (or close) waiting for it.
        self._changed = threading.Condition(self._lock)
        self._budget_used = 0
        self._cycle = 0
        self._scan_timeframes: set[str] = set()
        self._probed: dict[str, float] = {}
        # Keys whose cache.prefetch runs now, on one of the warmer's threads: never started
        # twice, and the fetches they make are the warmer's own (not a trader's read).
        self._prefetching: set[Key] = set()
        # Prefetch threads alive and taking keys; never more than max_parallel.
        self._live = 0
        # Where they run (reused from batch to batch).
        self._threads = DaemonThreads("sltrader-warming", config.max_parallel, THREAD_IDLE_S)
        # Keys whose prefetch was abandoned and is still running. Each holds a thread: with
        # max_parallel of them, nothing more starts.
        self._abandoned: set[Key] = set()
        self._told = Tally()  # the kinds of trouble logged: the first of each

    # -- events ---------------------------------------------------------------------

    def record_scan(self, symbols: Sequence[str], timeframe: str, now: float) -> None:
        """A scan read ``(symbol, timeframe)`` for every symbol; a new budget cycle starts."""
        with self._lock:
            self.tracker.record_many(symbols, timeframe, self.config.scan_weight, now)
            self._scan_timeframes.add(timeframe)
            self._budget_used = 0
            self._cycle += 1

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
        calls = self._prefetch(absent, now, cooldown=False)
        with self._lock:
            self.counters.new_symbol_warms += calls
            self.counters.refresh_s += time.perf_counter() - started
        return calls

    def record_signal(self, symbol: str, timeframe: str, warm: bool = True) -> None:
        """``symbol`` signalled: weigh it up and (if ``warm``) refresh its stale higher
        timeframes now."""
        now = self.clock.now()
        weight = self.config.signal_weight
        with self._lock:
            self.tracker.record(symbol, timeframe, weight, now)
            for tf in self.higher_timeframes:
                self.tracker.record(symbol, tf, weight, now)
        # The threshold does not apply: the signal is the evidence that these series will
        # be read (the next confirmation of this symbol reads them). Usually they are fresh,
        # the confirmation having just read them, and this costs nothing.
        if not warm:
            return
        keys = [
            (symbol, tf) for tf in self.higher_timeframes if self._state(symbol, tf, now) == "stale"
        ]
        calls = self._prefetch(keys, now)
        with self._lock:
            self.counters.signal_warms += calls

    def follow(self, symbol: str, timeframe: str) -> int:
        """The trader is about to fetch ``(symbol, timeframe)``: if it is a confirmation
        series, prefetch the symbol's other confirmation series now, without waiting.

        A trader reads a candidate's confirmation series one after the other, so the first
        fetch is the first news that the symbol is a candidate, and its other series are
        read next: fetched beside the first, they are in flight or cached when the trader
        gets to them. That costs no request the trader would not make. Called from the
        fetching thread (a worker), so it never waits for its prefetches. Returns the
        prefetches scheduled.
        """
        if not self.config.follow_confirmations or timeframe not in self.higher_timeframes:
            return 0
        now = self.clock.now()
        with self._lock:
            if (symbol, timeframe) in self._prefetching:
                return 0  # the warmer's own prefetch fetching: not a trader's read
            # The candidate reads every one of them: tracked, they get the cooldown below
            # and, read again soon, a score that refreshes them at their own close.
            for tf in self.higher_timeframes:
                self.tracker.record(symbol, tf, self.config.scan_weight, now)
            # Being fetched now, as good as refreshed: a sibling's fetch (a refused series
            # read again) does not prefetch it within the cooldown.
            self.tracker.mark_warmed(symbol, timeframe, now)
        others = [
            (symbol, tf)
            for tf in self.higher_timeframes
            if tf != timeframe and self._state(symbol, tf, now) != "fresh"
        ]
        # The cooldown applies: a series that a fetch brought in but the cache refused is
        # not fetched again for every read of the candidate's others.
        calls = self._prefetch(others, now, wait=False)
        with self._lock:
            self.counters.follow_warms += calls
        return calls

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
        # A probe may be a tracked key below the threshold: each key once.
        chosen = {(c.symbol, c.timeframe): c for c in (*probes, *hot)}
        stale = [c for c in chosen.values() if self._state(c.symbol, c.timeframe, now) == "stale"]
        hottest = heapq.nlargest(cfg.top_k, stale, key=lambda c: c.score)
        calls = self._prefetch([(c.symbol, c.timeframe) for c in hottest], now)
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
                probes.append(Candidate(symbol, tf, self.tracker.score(symbol, tf), now, None))
        return probes

    # -- policy ---------------------------------------------------------------------

    def _state(self, symbol: str, timeframe: str, now: float) -> str:
        """``"fresh"``, ``"stale"`` (cached, a newer candle has closed) or ``"absent"``.

        A cache that cannot answer, or answers something that is not a close time, gets
        no prefetch for this key (``"fresh"``): the loop goes on, the fault is counted.
        """
        try:
            latest = self.cache.latest_close_time(symbol, timeframe)
        except Exception:
            self._fault("latest_close_time", symbol, timeframe)
            return "fresh"
        if latest is None:
            return "absent"
        if not _is_time(latest):
            self._fault("latest_close_time", symbol, timeframe, f"returned {latest!r}")
            return "fresh"
        # A trader's own cache may state close times as exchanges do (open + interval -
        # 1 ms): rounded up to the boundary, such a series holds the last closed candle.
        closed = last_close_time(timeframe, now)
        return "stale" if close_boundary(timeframe, float(latest)) < closed else "fresh"

    def _admit(self, keys: Sequence[Key], now: float, cooldown: bool) -> list[Key]:
        """Apply cooldown, abandoned prefetches and budget; reserve one request per key."""
        cfg = self.config
        chosen: list[Key] = []
        with self._lock:
            if self._live >= cfg.max_parallel:
                # Every thread is busy: nothing starts, so nothing is reserved and no
                # cooldown starts (the keys may be warmed as soon as a thread is free).
                self.counters.stalled_skips += len(dict.fromkeys(keys))
                return chosen
            # Each key once: two of a batch's threads on one key would share its entry in
            # the batch's running set (a probe can come from two scanned timeframes).
            for key in dict.fromkeys(keys):
                last = self.tracker.last_warm(*key)
                if cooldown and last is not None and now - last < cfg.cooldown_s:
                    self.counters.cooldown_skips += 1
                    continue
                # A key still being fetched is not fetched twice; with every thread held
                # by a hung cache, starting more would only pile up hung threads.
                if key in self._prefetching or len(self._abandoned) >= cfg.max_parallel:
                    self.counters.stalled_skips += 1
                    continue
                if self._budget_used >= cfg.request_budget:
                    self.counters.budget_refusals += 1
                    continue
                # Reserved before the call, so concurrent prefetches can never overshoot.
                self._budget_used += 1
                # The cooldown starts at the attempt: a key that fails is not hammered.
                self.tracker.mark_warmed(*key, now)
                chosen.append(key)
        return chosen

    # -- execution ------------------------------------------------------------------

    def _prefetch(
        self, keys: Sequence[Key], now: float, cooldown: bool = True, wait: bool = True
    ) -> int:
        """Prefetch the admitted ``keys`` in parallel; wait at most ``PREFETCH_WAIT_S``.

        The one mechanism that keeps a slow or hung cache out of the loop: the hook's
        prefetches run on :class:`~sltrader_plugins.DaemonThreads` (a hung one never delays
        the process's exit, as a ThreadPoolExecutor's would), at most ``max_parallel`` at
        once counting every batch's, the abandoned ones included. Returns the prefetch
        calls started, or, with ``wait=False``, scheduled (the threads start them without
        a waiter).

        ``PREFETCH_WAIT_S`` only ever cuts a wait short; it never adds one on top of the
        cache's own bound: the wait ends as soon as the batch's last call returns, and a
        cache that bounds its fetches (``SingleFlightCache(fetch_timeout_s=T)``) returns a
        prefetch at that fetch's deadline at the latest, or at once when another fetch
        holds the key. The scan that reads a hung key next shares the same deadline, so
        warming it costs the scan nothing beyond the one bound it would wait anyway.
        """
        chosen = self._admit(keys, now, cooldown)
        if not chosen:
            return 0
        with self._lock:
            batch = _Batch(chosen, self._cycle, waited=wait)
            threads = min(self.config.max_parallel - self._live, len(chosen))
            if threads <= 0:
                # (rare: they became busy since _admit)
                self._unreserve_locked(chosen)
                return 0
            self._live += threads
            batch.threads = threads
        started = 0
        while started < threads and self._threads.start(self._work, batch) is not None:
            started += 1
        if started < threads:
            # (rare) A thread that left _live is still on its way back to the idle ones.
            with self._changed:
                self._live -= threads - started
                batch.threads -= threads - started
                if not started:
                    self._changed.notify_all()  # for wait_idle
                    self._unreserve_locked(chosen)
                    return 0
        if not wait:
            return len(chosen)
        with self._changed:
            if not self._changed.wait_for(lambda: batch.done, timeout=PREFETCH_WAIT_S):
                batch.expired = True
                unstarted = len(batch.keys) - batch.next
                # Never called: their reservations go back to the budget.
                self._budget_used -= unstarted
                self.counters.stalled_skips += unstarted
                self.counters.abandoned += len(batch.running)
                self._abandoned |= batch.running
            abandoned = len(batch.running) if batch.expired else 0
            started = batch.next
        if abandoned:
            self._log_once(
                "abandoned",
                "%d prefetch(es) still running after %.1f s were abandoned to their "
                "threads; further ones are only counted (metric %s)",
                abandoned,
                PREFETCH_WAIT_S,
                self._metric("abandoned"),
            )
        return started

    def _unreserve_locked(self, keys: Sequence[Key]) -> None:
        """No thread is free for ``keys`` (other batches', or a hung cache's): none starts.
        A new cycle may have reset the budget meanwhile."""
        self._budget_used = max(0, self._budget_used - len(keys))
        self.counters.stalled_skips += len(keys)

    def _work(self, batch: _Batch) -> None:
        """A prefetch thread: start the batch's keys in order until none is left."""
        with self._lock:
            key = self._take_locked(batch)
        while key is not None:
            requested = self._call_prefetch(key)
            with self._lock:
                batch.running.discard(key)
                self._prefetching.discard(key)
                if batch.expired:
                    self._abandoned.discard(key)  # a late finisher frees its key
                if requested:
                    self.counters.prefetches += 1
                elif requested is False:
                    # The series was fresh after all (a demand read got there first): no
                    # request was made, so the reservation goes back, if its cycle lasts.
                    self.counters.already_fresh += 1
                    if batch.cycle == self._cycle:
                        self._budget_used -= 1
                key = self._take_locked(batch)

    def _take_locked(self, batch: _Batch) -> Key | None:
        """The batch's next key for this thread, or ``None``: the thread leaves, free for
        another batch, in the same hold of the lock that recorded its last key (a hook that
        saw the batch done never finds the thread still counted). Caller holds the lock.
        """
        if batch.expired or batch.next == len(batch.keys):
            self._live -= 1
            batch.threads -= 1
            # Once per thread, not per key: a hook woken per key would cost the loop a
            # GIL switch each. The hook waits for its batch, close for every thread.
            self._changed.notify_all()
            return None
        key = batch.keys[batch.next]
        batch.next += 1
        batch.running.add(key)
        self._prefetching.add(key)
        self.counters.prefetch_calls += 1
        return key

    def _call_prefetch(self, key: Key) -> bool | None:
        """``cache.prefetch(*key)``: whether it made a request; ``None`` on a fault."""
        symbol, timeframe = key
        try:
            requested = self.cache.prefetch(symbol, timeframe)
        except Exception:
            self._fault("prefetch", symbol, timeframe)
            return None
        if not isinstance(requested, (bool, np.bool_)):
            # Whether it made a request is unknown: its reservation stays spent.
            self._fault("prefetch", symbol, timeframe, f"returned {requested!r}, not a bool")
            return None
        return bool(requested)

    # -- faults ---------------------------------------------------------------------

    def _metric(self, name: str) -> str:
        return name if self.name is None else f"{self.name}.{name}"

    def _fault(
        self, call: str, symbol: str | None, timeframe: str | None, reason: str | None = None
    ) -> None:
        """Count a faulty cache call; log the first of each kind of call.

        ``reason`` is ``None`` when called from an ``except`` block: the log then carries
        the exception.
        """
        with self._lock:
            self.counters.failures += 1
        where = "" if symbol is None else f" for {symbol!r:.80} on {timeframe}"
        self._log_once(
            call,
            "cache.%s%s %s; the warmer skips it; further faults of this call are only "
            "counted (metric %s)",
            call,
            where,
            "raised" if reason is None else f"{reason:.200}",
            self._metric("failures"),
            exc_info=reason is None,
        )

    def _log_once(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        if self._told.add(kind):
            log.warning(message, *args, exc_info=exc_info)

    # -- reporting and lifecycle ------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        with self._lock:
            c = attrs.asdict(self.counters)
            tracked = len(self.tracker)
            resets = self.tracker.sketch.resets
            refused = self.tracker.admissions_refused
            long_keys = self.tracker.untracked_long
        # Unprefixed: the manager prefixes each name with the plugin's.
        metrics = {
            "prefetches": float(c["prefetches"]),
            "budget_refusals": float(c["budget_refusals"]),
            "prefetch_calls": float(c["prefetch_calls"]),
            "already_fresh": float(c["already_fresh"]),
            "cooldown_skips": float(c["cooldown_skips"]),
            "signal_warms": float(c["signal_warms"]),
            "follow_warms": float(c["follow_warms"]),
            "new_symbol_warms": float(c["new_symbol_warms"]),
            "refreshes": float(c["refreshes"]),
            "refresh_s": float(c["refresh_s"]),
            "abandoned": float(c["abandoned"]),
            "stalled_skips": float(c["stalled_skips"]),
            "tracked_keys": float(tracked),
            "untracked_long_keys": float(long_keys),
            "sketch_resets": float(resets),
            "admissions_refused": float(refused),
        }
        # The cache knows which prefetched series were read before going stale; every
        # prefetch the cache sees is this plugin's, since the host never prefetches. A
        # cache that cannot say costs those two figures, not the warmer's own.
        try:
            stats = self.cache.stats()
            used, wasted = stats.prefetches_used, stats.prefetches_wasted
            if not (_is_count(used) and _is_count(wasted)):
                raise TypeError(f"prefetches_used={used!r}, prefetches_wasted={wasted!r}")
        except Exception:
            self._fault("stats", None, None)
        else:
            metrics["prefetches_used"] = float(used)
            metrics["prefetches_wasted"] = float(wasted)
        # Read last: a stats() fault is counted in this very report.
        with self._lock:
            metrics["failures"] = float(self.counters.failures)
        return metrics

    def wait_idle(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until no prefetch runs or waits to start (an
        abandoned one, or one nobody waits for); whether none does."""
        with self._changed:
            return self._changed.wait_for(lambda: self._live == 0, timeout=timeout)

    def close(self) -> None:
        """Wait at most ``PREFETCH_WAIT_S`` for running prefetches (abandoned or unwaited),
        then give up on them: their threads are daemons, so even a hung one does not keep
        the process alive."""
        self.wait_idle(PREFETCH_WAIT_S)
        with self._lock:
            failures, abandoned = self.counters.failures, self.counters.abandoned
            running = len(self._prefetching)
        if failures:
            log.warning("%d cache call(s) of the warmer failed in this run", failures)
        if abandoned:
            log.warning(
                "%d prefetch(es) of the warmer were abandoned in this run, %d still running",
                abandoned,
                running,
            )


def _is_time(value: object) -> bool:
    """A finite real number (numpy's included); not a bool, which is an int by accident."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def _is_count(value: object) -> bool:
    return _is_time(value) and value >= 0  # type: ignore[operator]
