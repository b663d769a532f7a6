"""``SingleFlightCache``: klines by ``(symbol, timeframe)`` in front of any fetch function.

Freshness follows candle close: a series is fresh until a newer candle of its timeframe
has closed. Entries are bounded; eviction is LRU guarded by a frequency-based admission
filter (the idea of TinyLFU), because a plain LRU collapses to zero hits when a looping
scan touches more keys than it holds, while the filter keeps a stable subset that keeps
hitting. In front of it, as in Caffeine's W-TinyLFU, a small window admits every new
series, so that one read soon after its fetch (a prefetch just ahead of its reader, a
candidate's confirmation series) finds it even when the filter would refuse it; the
window's oldest series then competes with the main part's least recent one. Concurrent
misses of one key, and a demand read racing a prefetch of that key, make one exchange
request ("single flight"); the others wait for it.

A bounded fetch (``fetch_timeout_s`` = T) has one deadline, its start plus T, and every
reader of its key, the one that started it included, waits for it until that deadline and
no longer: however many parts of the trader (a warming hook, then the scan) read a key
whose fetch hangs, together they wait T once. A fetch still running after its deadline is
*hung*: it keeps its key, and a read of that key then fails at once with the same
``TimeoutError`` instead of starting a second request to an exchange that does not
answer. The key is fetched again as soon as the hung fetch returns (what it brings is
cached as usual), a newer candle of its timeframe is wanted (the scans after the next
close), or ``retry_hung_after_s`` have passed since the deadline, whichever comes first.

Lock discipline: one lock, ``_lock``, guards every field below it in ``__init__``. It is
never held during an exchange request or while waiting for one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_future
from typing import NoReturn

import attrs

from sltrader_plugins.bounded import DaemonThreads
from sltrader_plugins.klines import Klines
from sltrader_plugins.protocols import CacheStats, Clock
from sltrader_plugins.tally import Tally
from sltrader_plugins.timeframes import last_close_time

log = logging.getLogger(__name__)

Key = tuple[str, str]

#: ``fetch(symbol, timeframe, limit)``: the newest ``limit`` closed candles, from the exchange.
Fetch = Callable[[str, str, int], Klines]

#: Why a demand read had to go to the exchange.
#: A fetch thread waits this long for the next bounded fetch, then ends: a trader that
#: scans more often reuses its threads instead of starting one per fetch.
FETCHER_IDLE_S = 10.0
MISS_CAUSES = ("candle_close", "new_key", "eviction", "higher_timeframe")


@attrs.define
class _Entry:
    klines: Klines
    last_close: float
    prefetched: bool  # filled by a prefetch and not yet read on demand


@attrs.define(eq=False)
class _Flight:
    """One request for a key, from its start until its fetch returns (or raises)."""

    target: float  # the close time the fetch brings the key up to
    prefetch: bool
    #: ``time.monotonic()`` after which nobody waits for it (``inf``: unbounded fetches).
    #: Fixed at the start, so that a later reader joining it waits only what is left.
    deadline: float
    future: Future = attrs.field(factory=Future)
    demand_waiters: int = 0


class SingleFlightCache:
    """A thread-safe kline cache; implements :class:`sltrader_plugins.KlineCache`.

    ``get_klines`` is the trader's (demand) read; ``prefetch`` is a plugin's.

    :param fetch: ``fetch(symbol, timeframe, limit) -> Klines``, called without any lock
        held, from the reading thread; what it raises reaches that reader (and every
        reader waiting on the same fetch), and nothing is cached.
    :param clock: what ``now`` is: a series is fresh while no newer candle has closed.
    :param capacity: the most series held at once, window included.
    :param window: series admitted without the frequency test, the newest ones (default:
        10 % of ``capacity``, rounded down; 0: none).
    :param base_timeframe: misses on other timeframes are counted as ``higher_timeframe``
        (``None``: every timeframe is counted alike).
    :param limits: candles fetched per timeframe (``default_limit`` for the others).
    :param fetch_timeout_s: a fetch's deadline is its start plus this: every reader of
        its key waits for it until then, not longer, then gets ``TimeoutError``; and a
        read of the key while the fetch still hangs past its deadline fails at once with
        it (see the module's doc). ``None``: no bound, ``fetch`` runs in the reader's
        thread. With a bound each fetch runs on a daemon thread, and one that never
        returns keeps its thread: at most ``max_hung_fetches`` may, then every fetch fails
        at once until one returns.
    :param retry_hung_after_s: with a bound, how long after its deadline a fetch that
        still hangs stops holding its key: the next read fetches it again (sooner when a
        newer candle is wanted, or the hung fetch returns). Long enough that one scan
        never waits twice for one key, short enough that a key of a long timeframe whose
        request was lost is retried well before its next candle.
    """

    def __init__(
        self,
        fetch: Fetch,
        clock: Clock,
        capacity: int,
        base_timeframe: str | None = None,
        limits: Mapping[str, int] | None = None,
        default_limit: int = 600,
        fetch_timeout_s: float | None = None,
        max_hung_fetches: int = 64,
        window: int | None = None,
        retry_hung_after_s: float = 30.0,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        window = capacity // 10 if window is None else window
        if not 0 <= window < capacity:
            raise ValueError(f"window must be in [0, capacity), got {window}")
        if fetch_timeout_s is not None and not 0 < fetch_timeout_s < float("inf"):
            raise ValueError(f"fetch_timeout_s must be a positive number, got {fetch_timeout_s}")
        if not 0 < retry_hung_after_s < float("inf"):
            raise ValueError(
                f"retry_hung_after_s must be a positive number, got {retry_hung_after_s}"
            )
        self._fetch_klines = fetch
        self._fetch_timeout_s = fetch_timeout_s
        self._retry_hung_after_s = retry_hung_after_s
        # Bounded fetches run on these threads; a hung one keeps its thread until it returns.
        self._fetchers = DaemonThreads("sltrader-fetch", max(1, max_hung_fetches), FETCHER_IDLE_S)
        self._clock = clock
        self.capacity = capacity
        self.window = window
        self.base_timeframe = base_timeframe
        self._limits = dict(limits or {})
        self._default_limit = default_limit
        self._lock = threading.Lock()
        # Every cached series is in exactly one of these, least recently used first.
        self._window: OrderedDict[Key, _Entry] = OrderedDict()  # at most `window`
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()  # the main part
        self._inflight: dict[Key, _Flight] = {}
        # Bounded history: keys evicted (or refused) recently, to tell an eviction miss
        # from a new key, and access frequencies, halved as they age.
        self._ghosts: OrderedDict[Key, None] = OrderedDict()
        self._freq: dict[Key, int] = {}
        self._freq_events = 0
        self._hits = 0
        self._misses = 0
        self._prefetches = 0
        self._prefetches_used = 0
        self._prefetches_wasted = 0
        self._evictions = 0
        self._refused = 0
        self._coalesced = 0
        self._unclosed = Tally()  # fetches that returned a candle not closed yet (trimmed)
        self._causes: Counter[str] = Counter()
        self._higher_causes: Counter[str] = Counter()  # higher_timeframe misses, split

    def limit(self, timeframe: str) -> int:
        """How many candles a fetch of ``timeframe`` asks for (``limits``, else
        ``default_limit``)."""
        return self._limits.get(timeframe, self._default_limit)

    # -- demand reads ---------------------------------------------------------------

    def get_klines(self, symbol: str, timeframe: str) -> Klines:
        """The series of ``(symbol, timeframe)`` up to the last candle closed by now.

        Shared and read-only: callers must not modify the arrays.

        :raises Exception: what ``fetch`` raised for a miss (nothing is cached).
        """
        key = (symbol, timeframe)
        with self._lock:
            target = last_close_time(timeframe, self._clock.now())
            self._count_access(key)
            entry, home = self._find_locked(key)
            if entry is not None and entry.last_close >= target:
                self._hits += 1
                home.move_to_end(key)
                if entry.prefetched:
                    entry.prefetched = False
                    self._prefetches_used += 1
                return entry.klines
            flight = self._inflight.get(key)
            mono = time.monotonic()
            owner = flight is None or not self._joinable_locked(flight, target, mono)
            if owner:
                self._misses += 1
                self._count_miss(key, entry)
                flight = self._start_locked(key, target, prefetch=False, mono=mono)
            elif mono >= flight.deadline:
                # Hung: this read fails at once (in _await, below), as a miss that made
                # no request. Not a waiter: if the series still lands, it stays a
                # prefetch's until a read finds it.
                self._misses += 1
                self._coalesced += 1
                self._count_miss(key, entry)
            else:
                flight.demand_waiters += 1
                if flight.prefetch:
                    # A prefetch serves this read: it did not have to go to the exchange.
                    self._hits += 1
                    if flight.demand_waiters == 1:  # a prefetch is used once, not per reader
                        self._prefetches_used += 1
                else:
                    self._misses += 1
                    self._coalesced += 1
                    self._count_miss(key, entry)
        if not owner:
            return self._await(key, flight)
        return self._fetch(key, flight)

    # -- prefetch (the KlineCache protocol) -----------------------------------------

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        """Bring ``(symbol, timeframe)`` up to the last close now, unless it is fresh or
        being fetched; whether this call fetched. Raises what the exchange raises."""
        key = (symbol, timeframe)
        with self._lock:
            target = last_close_time(timeframe, self._clock.now())
            entry, _ = self._find_locked(key)
            if entry is not None and entry.last_close >= target:
                return False
            mono = time.monotonic()
            flight = self._inflight.get(key)
            if flight is not None and self._joinable_locked(flight, target, mono):
                # Someone is already fetching it, or a hung fetch holds it: no second
                # request, and no wait either (a prefetch's caller wants none).
                return False
            # A prefetch is a prediction of a read: it counts toward admission.
            self._count_access(key)
            self._prefetches += 1
            flight = self._start_locked(key, target, prefetch=True, mono=mono)
        self._fetch(key, flight)
        return True

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        """Close time of the newest cached candle of the series, ``None`` if not cached."""
        with self._lock:
            entry, _ = self._find_locked((symbol, timeframe))
            if entry is None or not math.isfinite(entry.last_close):
                # An empty series has no close time (-inf inside, so that it is never
                # fresh): to a reader it is as good as absent.
                return None
            return entry.last_close

    # -- counters -------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """A snapshot of the counters (a prefetched series gone stale unread counts as
        wasted)."""
        with self._lock:
            # A prefetched series that went stale unread is waste even before it is replaced.
            pending_waste = sum(
                1
                for (_, timeframe), entry in (*self._window.items(), *self._entries.items())
                if entry.prefetched
                and entry.last_close < last_close_time(timeframe, self._clock.now())
            )
            return CacheStats(
                demand_hits=self._hits,
                demand_misses=self._misses,
                prefetches=self._prefetches,
                prefetches_used=self._prefetches_used,
                prefetches_wasted=self._prefetches_wasted + pending_waste,
                evictions=self._evictions,
                unclosed=self._unclosed.count(),
            )

    def miss_causes(self) -> dict[str, int]:
        """Demand misses by cause (they sum to ``stats().demand_misses``).

        ``candle_close``: the cached series went stale; ``new_key``: never cached (or
        evicted too long ago to remember); ``eviction``: evicted or refused admission
        recently; ``higher_timeframe``: any miss on a timeframe other than the base one.
        """
        with self._lock:
            return {cause: self._causes[cause] for cause in MISS_CAUSES}

    def higher_timeframe_causes(self) -> dict[str, int]:
        """The ``higher_timeframe`` misses split like base ones: ``candle_close``,
        ``new_key``, ``eviction`` (they sum to ``miss_causes()["higher_timeframe"]``)."""
        with self._lock:
            return {cause: self._higher_causes[cause] for cause in MISS_CAUSES[:3]}

    def extra_stats(self) -> dict[str, int]:
        """Counters beyond :class:`CacheStats`: size, refused admissions, coalesced misses."""
        with self._lock:
            return {
                "entries": len(self._window) + len(self._entries),
                "refused_admissions": self._refused,
                "coalesced_misses": self._coalesced,
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._window) + len(self._entries)

    # -- internals (the ``_locked`` suffix: caller holds ``_lock``) --------------------

    def _joinable_locked(self, flight: _Flight, target: float, mono: float) -> bool:
        """Whether a read wanting ``target`` shares ``flight`` instead of fetching again.

        Not when it brings an older candle, nor when it has hung past its deadline for
        ``retry_hung_after_s``: then the exchange gets another chance (its thread stays
        until it returns, counted by the fetch slots, so retries stay bounded too).
        """
        return flight.target >= target and mono < flight.deadline + self._retry_hung_after_s

    def _start_locked(self, key: Key, target: float, prefetch: bool, mono: float) -> _Flight:
        bound = self._fetch_timeout_s
        deadline = float("inf") if bound is None else mono + bound
        flight = _Flight(target, prefetch, deadline)
        # It replaces an older or long-hung flight of the key, which lands unseen.
        self._inflight[key] = flight
        return flight

    def _fetch(self, key: Key, flight: _Flight) -> Klines:
        """Make the request of ``flight``, which this thread started; wait for it."""
        if self._fetch_timeout_s is None:
            return self._complete(key, flight)
        try:
            started = self._fetchers.start(self._complete, key, flight)
        except BaseException as exc:  # no thread: nothing would land the flight
            self._fail(key, flight, exc)
        if started is None:
            symbol, timeframe = key
            self._fail(
                key,
                flight,
                TimeoutError(
                    f"fetch of ({symbol!r}, {timeframe!r}) not started: every fetch slot is "
                    "held by a fetch that has not returned (the exchange does not answer)"
                ),
            )
        # What the fetch raises reaches its readers through the flight: the call's own
        # outcome is not waited for.
        return self._await(key, flight)

    def _complete(self, key: Key, flight: _Flight) -> Klines:
        """Call ``fetch`` for ``flight``, cache what it returns, hand it to the readers.

        Lands the flight in every case (it is in ``_inflight`` until then) and raises what
        ``fetch`` raised, after handing it to the readers.
        """
        symbol, timeframe = key
        try:
            klines = self._fetch_klines(symbol, timeframe, self.limit(timeframe))
            if not isinstance(klines, Klines):
                raise TypeError(f"fetch returned a {type(klines).__name__} for {key}, not Klines")
            klines = self._closed(klines)
        except BaseException as exc:
            self._fail(key, flight, exc)
        try:
            with self._lock:
                self._land_locked(key, flight)
                prefetched = flight.prefetch and flight.demand_waiters == 0
                self._store_locked(key, klines, prefetched)
        finally:
            flight.future.set_result(klines)  # whatever happens, nobody waits forever
        return klines

    def _closed(self, klines: Klines) -> Klines:
        """``klines`` without the candles that have not closed by the clock: an exchange
        answers with the forming one, and a trader must never see it (a look-ahead that
        would also pass for fresh until the next close)."""
        closed = klines.closed_at(self._clock.now())
        if closed is not klines and self._unclosed.add():
            log.warning(
                "the fetch of %s %s returned a candle that has not closed yet; it is "
                "dropped, as in every such fetch (Klines.from_ohlcv drops it at the source)",
                klines.symbol,
                klines.timeframe,
            )
        return closed

    def _fail(self, key: Key, flight: _Flight, exc: BaseException) -> NoReturn:
        """``flight`` is over without a series: its readers, and this thread, get ``exc``."""
        with self._lock:
            self._land_locked(key, flight)
        flight.future.set_exception(exc)
        raise exc

    def _await(self, key: Key, flight: _Flight) -> Klines:
        """The series of ``flight``, waited for until its deadline (at once if past it).

        :raises TimeoutError: the fetch has not returned by its deadline.
        """
        if flight.deadline == float("inf"):
            return flight.future.result()
        # wait() rather than result(timeout): a TimeoutError the exchange itself raised
        # must reach the reader as is, not be taken for the deadline passing.
        wait_for_future([flight.future], timeout=max(0.0, flight.deadline - time.monotonic()))
        if not flight.future.done():
            symbol, timeframe = key
            raise TimeoutError(
                f"fetch of ({symbol!r}, {timeframe!r}) did not return within "
                f"{self._fetch_timeout_s:g} s"
            )
        return flight.future.result()

    def _land_locked(self, key: Key, flight: _Flight) -> None:
        # A candle may have closed while this fetch ran, or it hung long enough to be
        # retried, and a newer flight for the same key taken its slot: that one is not
        # ours to remove.
        if self._inflight.get(key) is flight:
            del self._inflight[key]

    def _find_locked(self, key: Key) -> tuple[_Entry | None, OrderedDict[Key, _Entry]]:
        """The entry of ``key`` and the part of the cache that holds it."""
        entry = self._window.get(key)
        if entry is not None:
            return entry, self._window
        return self._entries.get(key), self._entries

    def _store_locked(self, key: Key, klines: Klines, prefetched: bool) -> None:
        close = klines.last_close_time
        new = _Entry(klines, float("-inf") if close is None else close, prefetched)
        old, home = self._find_locked(key)
        if old is not None:
            if old.last_close > new.last_close:
                # An older fetch landed after a newer one: keep the newer series.
                if prefetched:
                    self._prefetches_wasted += 1
                return
            if old.prefetched:
                self._prefetches_wasted += 1  # replaced before any demand read
            home[key] = new
            home.move_to_end(key)
            return
        self._ghosts.pop(key, None)
        if self.window:
            self._window[key] = new
            if len(self._window) <= self.window:
                return
            key, new = self._window.popitem(last=False)
        self._admit_locked(key, new)

    def _admit_locked(self, key: Key, entry: _Entry) -> None:
        """Into the main part, if ``key`` is read more often than the series it displaces."""
        if len(self._entries) >= self.capacity - self.window:
            victim = next(iter(self._entries))
            if self._freq.get(key, 0) <= self._freq.get(victim, 0):
                # Refused: the victim is read at least as often. A reader already got
                # the series (or it was read in the window); it is just not kept.
                self._refused += 1
                self._remember_locked(key)
                if entry.prefetched:
                    self._prefetches_wasted += 1
                return
            evicted = self._entries.pop(victim)
            self._evictions += 1
            if evicted.prefetched:
                self._prefetches_wasted += 1
            self._remember_locked(victim)
        self._entries[key] = entry

    def _remember_locked(self, key: Key) -> None:
        self._ghosts[key] = None
        self._ghosts.move_to_end(key)
        while len(self._ghosts) > self.capacity:
            self._ghosts.popitem(last=False)

    def _count_access(self, key: Key) -> None:
        self._freq[key] = self._freq.get(key, 0) + 1
        self._freq_events += 1
        # Aging keeps frequencies recent and the table bounded (about 10x capacity keys).
        if self._freq_events >= 10 * self.capacity or len(self._freq) > 10 * self.capacity:
            self._freq = {k: v // 2 for k, v in self._freq.items() if v > 1}
            self._freq_events = 0

    def _count_miss(self, key: Key, entry: _Entry | None) -> None:
        if entry is not None:
            cause = "candle_close"
        elif key in self._ghosts:
            cause = "eviction"
        else:
            cause = "new_key"
        if self.base_timeframe is None or key[1] == self.base_timeframe:
            self._causes[cause] += 1
        else:
            self._causes["higher_timeframe"] += 1
            self._higher_causes[cause] += 1
