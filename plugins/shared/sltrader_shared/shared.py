"""``Shared``: one trader's side of the series store, the single flight and the budget.

Keys (``<ns>`` is the ``namespace`` setting; a symbol may hold any character, and the
parts after it never hold ``:``, so two series never share a key):

- ``<ns>:series:<symbol>:<timeframe>:<limit>``: the newest series any trader published
  for it (codec.py), with a TTL of two candles (at least a minute). One key per series,
  replaced at each close: Redis memory grows with the universe, not with run time.
- ``<ns>:lease:<symbol>:<timeframe>:<limit>:<close_time>``: who fetches the series for
  this close; a random token, ``PX lease_ms``, deleted by its holder when it published.
- ``<ns>:budget``: the token bucket of all traders' exchange requests.
- ``<ns>:traders``: the traders present (a sorted set: each one's id, scored by when it
  stops counting as present), written at each scan: a trader alone steps aside.

A series is served only when its newest candle closes exactly at the close time asked
for: never a stale one, never one whose candle has not closed by the asking trader's
clock. Thread safety: hooks run in many threads at once; ``_lock`` guards the counters
and the leases this trader holds, and is never held during a Redis call or a sleep.

Sharing costs a Redis round trip or two per fetch, which a trader with nobody to share
with pays for nothing. So at each scan a trader marks itself present and counts the
traders present; while it is alone it steps aside (:class:`sltrader_plugins.payoff.Payoff`):
it serves and publishes nothing and paces on its own bucket, at no Redis call per fetch,
and shares again from the first scan that finds another trader.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import attrs

from sltrader_plugins import KlineFetch, Klines, timeframe_seconds
from sltrader_plugins.payoff import Payoff
from sltrader_shared import codec
from sltrader_shared.config import SharedConfig
from sltrader_shared.link import RedisLink, Unavailable

log = logging.getLogger("sltrader_shared")

#: Leases this trader remembers at most (each fetch in flight holds one; an entry whose
#: ``after_fetch_klines`` never came is dropped oldest first, and its lease expires).
MAX_PENDING = 4096
#: Polling for another trader's fetch: the first pause, and the longest.
FIRST_POLL_S = 0.002
MAX_POLL_S = 0.05
#: A series key outlives its candle by this factor of the timeframe (hygiene only: a
#: series is served only for its own close time).
TTL_CANDLES = 2
MIN_TTL_MS = 60_000
#: A trader counts as present this many of its intervals between scans after a scan
#: (a trader that scans hourly is present for three hours), at least a minute, at most a
#: week: so traders that scan at the same closes, seconds apart, always see each other.
PRESENT_SCANS = 3
MIN_PRESENT_MS = 60_000
MAX_PRESENT_MS = 7 * 86_400_000
#: A trader that scans faster marks itself present at most once a second: its presence
#: lasts a minute or more, and a Redis call per scan is measurable on a cycle of a few ms.
MARK_EVERY_S = 1.0

SeriesKey = tuple[str, str, int, float]  # symbol, timeframe, limit, close time


@attrs.define
class _Pending:
    """What one fetch's ``serve_klines`` left for its ``after_fetch_klines``."""

    key: SeriesKey
    token: str | None  # the lease it holds, if any
    replace: bool = False  # the stored series for this close is garbage: overwrite it


class LocalBucket:
    """The token bucket of one trader, used while Redis is unavailable (same rate)."""

    def __init__(
        self, per_ms: float, burst: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_ms = per_ms
        self.burst = burst
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = monotonic() * 1000

    def take(self, weight: int, force: bool = False) -> float:
        """0 if ``weight`` is granted now (always when ``force``), else ms to wait."""
        with self._lock:
            now = self._monotonic() * 1000
            if now > self._updated:
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_ms)
                self._updated = now
            need = min(weight, self.burst)
            if self._tokens >= need or force:
                self._tokens -= weight
                return 0.0
            return max(1.0, (need - self._tokens) / self.per_ms)


class Shared:
    """Serves, publishes and paces for one trader (the hooks call it).

    :param sleep: how a wait passes (tests may replace it); every wait is bounded.
    """

    def __init__(
        self,
        config: SharedConfig,
        link: RedisLink,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.link = link
        # Whether it shares now: it steps aside while alone.
        self.payoff = Payoff(link.name, log)
        self.trader_id = secrets.token_hex(8)
        self._traders_key = f"{config.namespace}:traders"
        self._last_scan: float | None = None  # monotonic time of the last scan's mark
        self._marked = False  # it marked itself present (at start or at a scan)
        self.traders_present = 0  # at the last scan, this one included; 0: not known
        self._sleep = sleep
        self._monotonic = monotonic
        self._per_ms = config.requests_per_minute / 60_000
        self._local = LocalBucket(self._per_ms, config.burst, monotonic) if self._per_ms else None
        self._budget_key = f"{config.namespace}:budget"
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._pending: OrderedDict[KlineFetch, _Pending] = OrderedDict()
        self._counts = dict.fromkeys(
            (
                "served",
                "published",
                "leases",
                "lease_waits",
                "lease_timeouts",
                "pace_waits",
                "pace_wait_s",
                "pace_timeouts",
                "bad_series",
                "alone_scans",
            ),
            0.0,
        )

    # -- keys -----------------------------------------------------------------------

    def series_key(self, symbol: str, timeframe: str, limit: int) -> str:
        return f"{self.config.namespace}:series:{symbol}:{timeframe}:{limit}"

    def lease_key(self, symbol: str, timeframe: str, limit: int, close_time: float) -> str:
        return f"{self.config.namespace}:lease:{symbol}:{timeframe}:{limit}:{close_time!r}"

    # -- serve_klines -----------------------------------------------------------------

    # -- before_scan --------------------------------------------------------------------

    def mark_due(self) -> bool:
        """Whether a scan's :meth:`mark_present` would ask Redis now (else it only counts)."""
        last = self._last_scan
        return last is None or self._monotonic() - last >= MARK_EVERY_S

    def mark_present(self, scan: bool = True) -> int:
        """Mark this trader present and step aside while it is alone (or Redis is out);
        the traders present, this one included (0 when Redis cannot say). A scan less
        than :data:`MARK_EVERY_S` after the last mark changes nothing and answers the
        last mark's count. The start's mark does not count as one: traders started
        together mark at start in some order, and the first would otherwise scan alone
        for a second although the others are there.

        :param scan: a scan starts (else the trader starts): counted when alone.
        """
        now = self._monotonic()
        if scan and not self.mark_due():
            if not self.payoff.active:
                self._count("alone_scans")
            return self.traders_present
        interval_ms = 0.0 if self._last_scan is None else (now - self._last_scan) * 1000
        if scan:
            self._last_scan = now
        present_ms = round(min(max(PRESENT_SCANS * interval_ms, MIN_PRESENT_MS), MAX_PRESENT_MS))
        keys, args = [self._traders_key], [self.trader_id, present_ms]
        self._marked = True
        try:
            present = int(self.link.run(lambda _, s: s.presence(keys=keys, args=args)))
        except Unavailable:
            present = 0
        self.traders_present = present
        if not self.config.share_alone:
            # Redis out (0): every call falls back anyway, and the link logs the outage.
            why = f"{present} trader(s) present" if present else "Redis unavailable"
            self.payoff.judge(present > 1, why)
        if scan and not self.payoff.active:
            self._count("alone_scans")
        return present

    # -- serve_klines -----------------------------------------------------------------

    def serve(self, fetch: KlineFetch) -> Klines | None:
        """The series another trader published for exactly this close, or ``None`` (fetch).

        Returns ``None`` at once holding the lease when nobody else fetches it; else
        polls for the holder's series at most ``wait_ms``, taking the lease over if it
        goes without a series (its holder failed, or died and the lease expired).
        Aside (alone), ``None`` at once, without Redis.
        """
        if not self.payoff.active:
            return None
        symbol, timeframe, limit = fetch.symbol, fetch.timeframe, fetch.limit
        close_time = float(fetch.close_time)
        key: SeriesKey = (symbol, timeframe, limit, close_time)
        keys = [self.series_key(*key[:3]), self.lease_key(*key)]
        token = secrets.token_hex(8)
        args = [repr(close_time), token, self.config.lease_ms]
        deadline = self._monotonic() + self.config.wait_ms / 1000
        pause = FIRST_POLL_S
        waited = False
        while True:
            try:
                kind, value = self.link.run(lambda _, s: s.claim(keys=keys, args=args))
            except Unavailable:
                self._remember(fetch, _Pending(key, None))
                return None
            if kind == 1:
                try:
                    klines = codec.decode(value, symbol, timeframe, limit, close_time)
                except ValueError:
                    # Garbage where a series should be: fetch, and overwrite it.
                    self._count("bad_series")
                    self._remember(fetch, _Pending(key, None, replace=True))
                    return None
                self._count("served")
                return klines
            if kind == 2:
                self._count("leases")
                self._remember(fetch, _Pending(key, token))
                return None
            if not waited:
                waited = True
                self._count("lease_waits")
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                self._count("lease_timeouts")
                self._remember(fetch, _Pending(key, None))
                return None
            # Jittered, so waiters of one series do not poll in step.
            self._sleep(min(pause * random.uniform(0.5, 1.5), remaining))
            pause = min(pause * 2, MAX_POLL_S)

    # -- after_fetch_klines -----------------------------------------------------------

    def fetched(self, fetch: KlineFetch, klines: Klines | None) -> None:
        """Publish what the exchange answered (if it can be served) and free the lease."""
        symbol, timeframe, limit = fetch.symbol, fetch.timeframe, fetch.limit
        key: SeriesKey = (symbol, timeframe, limit, float(fetch.close_time))
        with self._lock:
            pending = self._pending.pop(fetch, None)
        token = pending.token if pending is not None else None
        if token is None and not self.payoff.active:
            return  # alone: nobody to publish for (a lease taken before is still freed)
        value, stored_close = b"", 0.0
        if klines is not None and self._publishable(klines, symbol, timeframe, limit):
            value = codec.encode(klines)
            stored_close = klines.last_close_time or 0.0
        if not value and token is None:
            return
        timeframe_ms = timeframe_seconds(timeframe) * 1000
        ttl_ms = max(MIN_TTL_MS, round(TTL_CANDLES * timeframe_ms))
        keys = [self.series_key(symbol, timeframe, limit), self.lease_key(*key)]
        replace = "1" if pending is not None and pending.replace else "0"
        args = [repr(stored_close), value, ttl_ms, replace, token or ""]
        try:
            stored = self.link.run(lambda _, s: s.publish(keys=keys, args=args))
        except Unavailable:
            return
        if stored:
            self._count("published")

    @staticmethod
    def _publishable(klines: Klines, symbol: str, timeframe: str, limit: int) -> bool:
        # What a reader would refuse anyway is not worth a round trip (an exchange that
        # answered another symbol, or too much, is the host's problem, not ours to share).
        return (
            isinstance(klines, Klines)
            and (klines.symbol, klines.timeframe) == (symbol, timeframe)
            and 0 < klines.n <= limit
        )

    # -- pace_exchange_request ---------------------------------------------------------

    def pace(self, weight: int, fetch: KlineFetch | None = None) -> None:
        """Return when the budget grants ``weight``, or after ``max_pace_wait_ms`` anyway.

        :param fetch: the kline fetch the request is for: its lease is kept alive.
        """
        if self._local is None or weight <= 0:
            return
        start = self._monotonic()
        deadline = start + self.config.max_pace_wait_ms / 1000
        held: list[tuple[SeriesKey, str]] | None = None
        force = slept = False
        while True:
            wait_ms = self._take(weight, force)
            if wait_ms <= 0:
                break
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                # Let it go, and take it from the budget all the same: the request is
                # made, and the others should wait for it.
                force = True
                self._count("pace_timeouts")
                continue
            if held is None:
                held = self._held_leases(fetch)
            pause = min(wait_ms / 1000 * random.uniform(1.0, 1.25), remaining)
            if held:
                # A fetch paced after it took its lease: keep the lease alive through the
                # wait, or it expires and another trader fetches the same series.
                pause = min(pause, self.config.lease_ms / 3000)
            self._sleep(pause)
            slept = True
            if held:
                self._renew(held)
        if slept:
            with self._lock:
                self._counts["pace_waits"] += 1
                self._counts["pace_wait_s"] += self._monotonic() - start

    def _take(self, weight: int, force: bool) -> float:
        assert self._local is not None
        if not self.payoff.active:
            return self._local.take(weight, force)  # alone: the budget is this trader's
        args = [repr(self._per_ms), self.config.burst, weight, "1" if force else "0"]
        try:
            return float(self.link.run(lambda _, s: s.take(keys=[self._budget_key], args=args)))
        except Unavailable:
            return self._local.take(weight, force)

    def _held_leases(self, fetch: KlineFetch | None) -> list[tuple[SeriesKey, str]]:
        """The lease ``fetch`` holds, if it took one."""
        with self._lock:
            pending = self._pending.get(fetch) if fetch is not None else None
        return [(pending.key, pending.token)] if pending and pending.token else []

    def _renew(self, held: list[tuple[SeriesKey, str]]) -> None:
        for key, token in held:
            keys, args = [self.lease_key(*key)], [token, self.config.lease_ms]
            try:
                self.link.run(lambda _, s, keys=keys, args=args: s.renew(keys=keys, args=args))
            except Unavailable:
                return

    # -- bookkeeping --------------------------------------------------------------------

    def _remember(self, fetch: KlineFetch, pending: _Pending) -> None:
        with self._lock:
            self._pending[fetch] = pending
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def metrics(self) -> dict[str, float]:
        """Counters, what sharing saved first (``served``: fetches another trader made)."""
        with self._lock:
            counts = dict(self._counts)
        step = self.payoff.counters()
        return {
            **counts,
            "traders_present": float(self.traders_present),
            "stepped_aside": float(step.stepped_aside),
            "step_asides": float(step.step_asides),
            "comebacks": float(step.comebacks),
            **self.link.stats(),
        }

    def close(self) -> None:
        """Frees the leases still held (their fetches will not publish), then disconnects."""
        with self._lock:
            held = [(p.key, p.token) for p in self._pending.values() if p.token]
            self._pending.clear()
        for key, token in held:
            keys = [self.series_key(*key[:3]), self.lease_key(*key)]
            args = ["0", "", 1000, "0", token]
            try:
                self.link.run(lambda _, s, keys=keys, args=args: s.publish(keys=keys, args=args))
            except Unavailable:
                break
        if self._marked:  # it marked itself present: it is gone now
            keys, args = [self._traders_key], [self.trader_id]
            with contextlib.suppress(Unavailable):
                self.link.run(lambda _, s: s.leave(keys=keys, args=args))
        self.link.close()
