"""What a plugin may rely on: the host's services, as structural types.

A trader that is not the reference host can use every plugin by implementing these
protocols; nothing here imports the reference host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import numpy as np


@runtime_checkable
class Model(Protocol):
    """A prediction model. ``predict`` must be safe to call from many threads at once.

    A model may declare ``prediction_range = (low, high)``, the closed interval its
    predictions lie in (a probability's is ``(0.0, 1.0)``): a plugin's prediction outside
    it is then the plugin's fault, and the trader predicts itself. Without it only a
    plugin's answer that is not a finite number is refused.
    """

    def predict(self, features: np.ndarray) -> float:
        """Return the prediction for one feature vector (1-D float64 array)."""
        ...


@runtime_checkable
class BatchModel(Model, Protocol):
    """A model that can also predict many feature vectors in one call."""

    def predict_batch(self, features: Sequence[np.ndarray]) -> Sequence[float]:
        """Return one prediction per feature vector, in order.

        ``predict_batch([f])[0]`` must equal ``predict(f)`` (to 1e-9).
        """
        ...


@runtime_checkable
class Clock(Protocol):
    """The host's clock. For a replay it is simulated; for a live trader it is wall time."""

    def now(self) -> float:
        """Current time in epoch seconds."""
        ...


@attrs.frozen
class CacheStats:
    """Counters of a kline cache.

    Demand reads are the host's own reads; a prefetch never counts as a hit or a miss.
    """

    demand_hits: int = 0
    demand_misses: int = 0
    prefetches: int = 0  #: prefetches that went to the exchange
    prefetches_used: int = 0  #: prefetched series read on demand before going stale
    prefetches_wasted: int = 0  #: prefetched series stale or evicted without a demand read
    evictions: int = 0
    unclosed: int = 0  #: fetches that answered a candle not closed yet (dropped)

    @property
    def hit_rate(self) -> float:
        """Demand hits over demand reads (0.0 before the first read)."""
        reads = self.demand_hits + self.demand_misses
        return self.demand_hits / reads if reads else 0.0


@runtime_checkable
class KlineCache(Protocol):
    """Klines by ``(symbol, timeframe)``; a series is fresh until a newer candle has closed."""

    def prefetch(self, symbol: str, timeframe: str) -> bool:
        """Bring ``(symbol, timeframe)`` up to the last candle closed by the clock's now.

        Does nothing and returns ``False`` when the cached series is already fresh.
        Returns ``True`` when it made an exchange request. Concurrent demand reads of the
        same key wait for this fetch instead of fetching again. Raises what the exchange
        raises; never fetches a candle that has not closed.
        """
        ...

    def latest_close_time(self, symbol: str, timeframe: str) -> float | None:
        """Close time (epoch seconds) of the newest cached candle, ``None`` if not cached.

        The candle's boundary (``open + interval``); an exchange's ``open + interval -
        1 ms`` is accepted too: readers round it up with
        :func:`sltrader_plugins.close_boundary`.
        """
        ...

    def stats(self) -> CacheStats:
        """A snapshot of the cache's counters."""
        ...


@runtime_checkable
class FeatureBuffers(Protocol):
    """Where the intermediate arrays of one feature build come from.

    The host asks for every temporary array of one build through ``empty`` and calls
    ``release`` exactly once when the build ends, also when it raises. After ``release``
    the host holds no reference to any array it was given; the features it returns are
    its own copies.
    """

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        """An uninitialised 1-D array of ``n`` elements, for this build only."""
        ...

    def release(self) -> None:
        """The build is over: every array handed out may be reused."""
        ...


@attrs.frozen
class HostServices:
    """What the host hands its plugins at start-up (``on_start``), the same for each.

    :ivar model: the model as the host calls it (a plugin that predicts must use this one,
        so that the host's model-time accounting stays true).
    :ivar cache: the kline cache in front of the exchange.
    :ivar clock: the host's clock.
    :ivar base_timeframe: the timeframe every scan reads, e.g. ``"1m"``.
    :ivar workers: the number of worker threads that call ``before_predict``.
    :ivar confirm_timeframes: the higher timeframes read to confirm a candidate signal.
    """

    model: Model
    cache: KlineCache
    clock: Clock
    base_timeframe: str
    workers: int
    confirm_timeframes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
