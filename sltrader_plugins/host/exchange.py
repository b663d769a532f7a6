"""The exchange interface and the replay exchange, with its simulated clock.

The replay exchange is the host's embedded market: deterministic klines for many symbols
from a seeded market model, generated lazily per symbol, served with real (slept)
latency and counted against a rate-limit budget. It never returns a candle that closes
after the clock's now, so a replay cannot look ahead.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import attrs
import numpy as np

from sltrader_plugins.config import finite
from sltrader_plugins.klines import Klines, readonly
from sltrader_plugins.protocols import Clock
from sltrader_plugins.timeframes import last_close_time, timeframe_seconds

BASE_SECONDS = 60  # the market model ticks in 1m candles; larger timeframes aggregate them
DAY_SECONDS = 86400


class ExchangeError(Exception):
    """An exchange request failed; the caller skips what it needed the data for."""


class UnknownSymbolError(ExchangeError):
    """The exchange does not list the symbol."""


class RateLimitExceeded(ExchangeError):
    """More requests than the exchange's budget allows (the replay exchange: in one
    simulated minute; a served one: in its real-time window).

    :ivar retry_after_s: when the exchange said a request may go again (seconds), if it did.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@attrs.frozen
class LatencyProfile:
    """Real latency slept per exchange request.

    A request takes ``mean_ms * (1 + jitter * u)``, ``u`` uniform in [-1, 1]; with
    probability ``tail_p`` it takes ``tail_factor`` times that (a retransmission, a
    congested route). ``lan`` and ``wan`` are in :data:`LATENCY_PROFILES`.
    """

    mean_ms: float = attrs.field(default=0.0, validator=finite(min=0, max=10_000))
    jitter: float = attrs.field(default=0.5, validator=finite(min=0, max=1))
    tail_p: float = attrs.field(default=0.0, validator=finite(min=0, max=1))
    tail_factor: float = attrs.field(default=1.0, validator=finite(min=1, max=100))

    def sample_s(self, rng: random.Random) -> float:
        """One request's latency in seconds (0 without drawing when ``mean_ms`` is 0).

        The tail is drawn only when the profile has one, so a profile without a tail
        draws exactly what the replay exchange always drew (same seed, same sleeps).
        """
        if self.mean_ms <= 0:
            return 0.0
        seconds = self.mean_ms / 1000.0 * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))
        if self.tail_p > 0 and rng.random() < self.tail_p:
            seconds *= self.tail_factor
        return seconds


#: The latency profiles by name: ``lan`` is a trader next to the exchange (the same
#: region), ``wan`` one on another continent (docs/workload.md has the sources).
LATENCY_PROFILES: dict[str, LatencyProfile] = {
    "lan": LatencyProfile(mean_ms=4.0, jitter=0.5),
    "wan": LatencyProfile(mean_ms=150.0, jitter=0.3, tail_p=0.02, tail_factor=3.0),
}


class Exchange(Protocol):
    """What the host needs from an exchange (the replay exchange, or a live adapter)."""

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        """The newest ``limit`` closed candles of ``symbol`` on ``timeframe``.

        :raises UnknownSymbolError: the symbol is not listed.
        :raises ExchangeError: the request failed (rate limit, network, ...).
        """
        ...

    def top_symbols(self, n: int) -> list[str]:
        """The ``n`` symbols with the most recent volume, highest first."""
        ...


class SimClock:
    """A simulated clock: time moves only when the main loop advances it.

    Implements :class:`sltrader_plugins.Clock`. Readers from any thread see a float that
    is replaced atomically; only the main loop writes.
    """

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward; returns the new now."""
        if seconds < 0:
            raise ValueError(f"the clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds
            return self._now


@attrs.frozen
class MarketConfig:
    """The seeded market model.

    :ivar start: the clock's start; candles exist from ``start - history_s`` on.
    :ivar history_s: how much history precedes ``start``.
    :ivar horizon_s: how far after ``start`` the market is generated.
    """

    seed: int
    start: float
    history_s: float
    horizon_s: float
    volume_churn: float = 0.08  #: per-hour standard deviation of each symbol's log volume


class _Regime:
    # (drift per candle as a multiple of vol, momentum of returns, vol multiplier)
    TREND = 0
    CHOP = 1
    BURST = 2


@attrs.frozen(eq=False)
class _Series:
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def symbol_rng(seed: int, symbol: str, stream: str) -> np.random.Generator:
    """A generator determined by ``(seed, symbol, stream)`` alone, stable across runs."""
    digest = hashlib.sha256(f"{seed}\x00{symbol}\x00{stream}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def generate_series(config: MarketConfig, symbol: str) -> _Series:
    """The 1m candles of ``symbol`` over the whole market window.

    Regimes follow a Markov chain: trends (drift and momentum, so returns are partly
    predictable), chop (mean reversion around a level) and volatility bursts.
    """
    rng = symbol_rng(config.seed, symbol, "market")
    first = last_close_time("1d", config.start - config.history_s)
    n = math.ceil((config.start + config.horizon_s - first) / BASE_SECONDS) + 1
    base_vol = float(rng.uniform(0.0006, 0.002))
    returns = np.empty(n)
    regime = _Regime.CHOP
    i = 0
    previous = 0.0
    level = 0.0
    # The chain is walked segment by segment; inside a segment returns are vectorised
    # except for the AR(1) momentum term, which needs the previous return.
    while i < n:
        length = int(rng.integers(30, 240))
        end = min(n, i + length)
        shocks = rng.standard_normal(end - i)
        if regime == _Regime.TREND:
            drift = float(rng.choice((-1.0, 1.0))) * base_vol * float(rng.uniform(0.05, 0.2))
            phi = float(rng.uniform(0.15, 0.35))
            for j in range(end - i):
                previous = drift + phi * previous + base_vol * shocks[j]
                returns[i + j] = previous
        elif regime == _Regime.CHOP:
            for j in range(end - i):
                previous = -0.2 * level + base_vol * 0.7 * shocks[j]
                level += previous
                returns[i + j] = previous
        else:
            returns[i:end] = base_vol * float(rng.uniform(2.5, 5.0)) * shocks
            previous = float(returns[end - 1])
        level = 0.0 if regime != _Regime.CHOP else level
        regime = int(rng.choice(3, p=(0.45, 0.4, 0.15)))
        i = end
    price0 = float(np.exp(rng.uniform(np.log(0.001), np.log(50000.0))))
    close = price0 * np.exp(np.cumsum(returns))
    open_ = np.empty(n)
    open_[0] = price0
    open_[1:] = close[:-1]
    wick = np.abs(rng.standard_normal((2, n))) * base_vol * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    # Volume follows activity (absolute return) around the symbol's slow volume level.
    activity = 1.0 + np.abs(returns) / base_vol
    volume = activity * rng.lognormal(0.0, 0.3, n)
    open_time = first + BASE_SECONDS * np.arange(n, dtype=np.float64)
    return _Series(open_time, open_, high, low, close, volume)


class ReplayExchange:
    """A deterministic exchange over a seeded market model.

    Thread-safe: series are generated once per symbol (double-checked under a lock) and
    never mutated; counters and the rate-limit window are guarded by ``_lock``.

    :param symbols: the listed symbols (any characters, including ``_ / -``).
    :param latency_s: mean real latency slept per request (0 in unit tests).
    :param jitter: latency varies uniformly within ``latency_s * (1 ± jitter)``.
    :param rate_limit_per_min: requests allowed per simulated minute (0: unlimited).
    :param latency: the whole latency profile (a tail too); given, it replaces
        ``latency_s`` and ``jitter``.
    """

    def __init__(
        self,
        market: MarketConfig,
        symbols: Sequence[str],
        clock: Clock,
        latency_s: float = 0.0,
        jitter: float = 0.5,
        rate_limit_per_min: int = 0,
        latency: LatencyProfile | None = None,
    ) -> None:
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols")
        self.market = market
        self.clock = clock
        self.latency = latency or LatencyProfile(mean_ms=latency_s * 1000.0, jitter=jitter)
        self.latency_s = self.latency.mean_ms / 1000.0
        self.jitter = self.latency.jitter
        self.rate_limit_per_min = rate_limit_per_min
        self._symbols = tuple(symbols)
        self._listed = frozenset(symbols)
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._aggregates: dict[tuple[str, str], _Series] = {}
        self._volume_levels: dict[str, np.ndarray] = {}
        self._jitter_rng = random.Random(market.seed)
        self._requests = 0
        self._window_minute = -1.0
        self._window_requests = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._symbols

    @property
    def requests(self) -> int:
        """Requests served or refused so far."""
        return self._requests

    # -- requests -------------------------------------------------------------------

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        self._count_request()
        klines = self.klines_at(symbol, timeframe, limit, self.clock.now())
        self._sleep()
        return klines

    def klines_at(self, symbol: str, timeframe: str, limit: int, now: float) -> Klines:
        """The newest ``limit`` candles closed by ``now``: no request counted, no latency
        (what a served exchange answers for a client's clock).

        :raises UnknownSymbolError: the symbol is not listed.
        :raises ExchangeError: a timeframe that is not whole minutes, a limit below 1,
            or ``now`` after the end of the replay.
        """
        series, begin, end = self.window(symbol, timeframe, limit, now)
        return Klines(
            symbol,
            timeframe,
            *(readonly(a[begin:end].copy()) for a in attrs.astuple(series, recurse=False)),
        )

    def window(
        self, symbol: str, timeframe: str, limit: int, now: float
    ) -> tuple[_Series, int, int]:
        """Where :meth:`klines_at`'s candles are: the whole series of ``(symbol,
        timeframe)`` (never mutated) and the slice ``[begin, end)`` of it."""
        if symbol not in self._listed:
            raise UnknownSymbolError(f"unknown symbol {symbol!r}: the exchange does not list it")
        step = timeframe_seconds(timeframe)
        if step % BASE_SECONDS:
            raise ExchangeError(f"timeframe {timeframe!r} is not a whole number of minutes")
        if step > DAY_SECONDS:
            # Candles here are runs of minutes from the epoch; weeks open on Monday and
            # months on the 1st, which such runs do not cut (and a replay spans hours).
            raise ExchangeError(f"timeframe {timeframe!r}: the replay serves up to days")
        if limit <= 0:
            raise ExchangeError(f"limit must be positive, got {limit}")
        series = self._aggregate(symbol, timeframe)
        if now > self.market.start + self.market.horizon_s:
            raise ExchangeError(f"the replay ends at {self.market.start + self.market.horizon_s}")
        # Candles whose close (open + step) is <= now have closed: no look-ahead.
        end = int(np.searchsorted(series.open_time, now - step, side="right"))
        return series, max(0, end - limit), end

    def top_symbols(self, n: int) -> list[str]:
        """The ``n`` listed symbols with the highest volume level now (one request)."""
        self._count_request()
        return rank_symbols(self.volume_levels(self.clock.now()), n)

    def volume_levels(self, now: float) -> list[tuple[str, float]]:
        """Each listed symbol's volume level at ``now`` (what the universe ranks by), in
        listing order; no request counted."""
        hour = (now - self.market.start + self.market.history_s) / 3600.0
        index = max(0, int(hour))
        frac = hour - index
        levels_at = []
        for symbol in self._symbols:
            levels = self._volume_level(symbol)
            i = min(index, len(levels) - 2)
            levels_at.append((symbol, float(levels[i] * (1 - frac) + levels[i + 1] * frac)))
        return levels_at

    # -- internals ------------------------------------------------------------------

    def _count_request(self) -> None:
        minute = math.floor(self.clock.now() / 60.0)
        with self._lock:
            self._requests += 1
            if minute != self._window_minute:
                self._window_minute = minute
                self._window_requests = 0
            self._window_requests += 1
            over = self.rate_limit_per_min and self._window_requests > self.rate_limit_per_min
        if over:
            raise RateLimitExceeded(
                f"rate limit exceeded: more than {self.rate_limit_per_min} requests in the "
                f"simulated minute starting at {minute * 60:.0f}"
            )

    def _sleep(self) -> None:
        if self.latency.mean_ms <= 0:
            return
        with self._lock:
            seconds = self.latency.sample_s(self._jitter_rng)
        time.sleep(seconds)

    def _base(self, symbol: str) -> _Series:
        series = self._series.get(symbol)
        if series is None:
            generated = generate_series(self.market, symbol)
            with self._lock:
                series = self._series.setdefault(symbol, generated)
        return series

    def _aggregate(self, symbol: str, timeframe: str) -> _Series:
        if timeframe_seconds(timeframe) == BASE_SECONDS:
            return self._base(symbol)
        key = (symbol, timeframe)
        series = self._aggregates.get(key)
        if series is None:
            built = aggregate(self._base(symbol), timeframe_seconds(timeframe) // BASE_SECONDS)
            with self._lock:
                series = self._aggregates.setdefault(key, built)
        return series

    def _volume_level(self, symbol: str) -> np.ndarray:
        levels = self._volume_levels.get(symbol)
        if levels is None:
            rng = symbol_rng(self.market.seed, symbol, "volume")
            hours = int((self.market.history_s + self.market.horizon_s) / 3600) + 3
            walk = np.cumsum(rng.normal(0.0, self.market.volume_churn, hours))
            built = np.exp(rng.normal(0.0, 1.5) + walk)
            with self._lock:
                levels = self._volume_levels.setdefault(symbol, built)
        return levels


def rank_symbols(levels: Sequence[tuple[str, float]], n: int) -> list[str]:
    """The ``n`` symbols of the highest volume level, highest first (ties: by name).

    The replay exchange's universe and a served exchange's client both rank with this,
    so a client given the same levels (exact floats) ranks the same symbols.
    """
    return [symbol for _, symbol in sorted((-level, symbol) for symbol, level in levels)[:n]]


def aggregate(base: _Series, k: int) -> _Series:
    """Candles of ``k`` base candles each, aligned to the epoch (partial ones dropped)."""
    # The market starts on a day boundary, so blocks of k base candles are epoch-aligned.
    blocks = len(base.close) // k
    end = blocks * k
    first = 0

    def view(a: np.ndarray) -> np.ndarray:
        return a[first:end].reshape(blocks, k)

    return _Series(
        open_time=base.open_time[first:end:k].copy(),
        open=view(base.open)[:, 0].copy(),
        high=view(base.high).max(axis=1),
        low=view(base.low).min(axis=1),
        close=view(base.close)[:, -1].copy(),
        volume=view(base.volume).sum(axis=1),
    )
