"""``ParallelAnalyzer``: one scan, symbol by symbol, on a thread pool.

Each symbol is read through the cache, turned into features and predicted, inside the
public call sites of :class:`sltrader_plugins.Plugins`: ``plugins.analyzing`` (the
``before_``/``after_analyze_symbol`` hooks) and ``plugins.predict`` (``before_predict``,
else ``model.predict``). A symbol that cannot be analyzed is skipped with a logged reason;
nothing a symbol does can stop the scan.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import attrs
import numpy as np

from sltrader_plugins.cache import SingleFlightCache
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.host.exchange import ExchangeError
from sltrader_plugins.host.features import FeatureEngine, FeatureError
from sltrader_plugins.klines import Klines
from sltrader_plugins.tally import Tally

log = logging.getLogger(__name__)


@attrs.frozen(eq=False)
class Analysis:
    """A symbol's result in one scan."""

    symbol: str
    klines: Klines  #: the series the features came from (shared, read-only)
    features: np.ndarray
    prediction: float

    @property
    def close_time(self) -> float:
        return float(self.klines.last_close_time or 0.0)

    @property
    def close(self) -> float:
        return float(self.klines.close[-1])


@attrs.frozen
class Skipped:
    """A symbol that could not be analyzed, and why."""

    symbol: str
    reason: str


class Samples:
    """A bounded record of durations: exact while it fits, a reservoir sample after.

    Thread-safe (``_lock``). The reservoir uses a seeded generator, so what is kept
    depends only on the order of ``add`` calls.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self._values = np.empty(capacity)
        self._count = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)

    def add(self, value: float) -> None:
        with self._lock:
            if self._count < len(self._values):
                self._values[self._count] = value
            else:
                j = int(self._rng.integers(0, self._count + 1))
                if j < len(self._values):
                    self._values[j] = value
            self._count += 1

    def __len__(self) -> int:
        return self._count

    def percentile(self, q: float) -> float:
        with self._lock:
            kept = self._values[: min(self._count, len(self._values))]
            return float(np.percentile(kept, q)) if len(kept) else 0.0


class SkipLog:
    """Skipped symbols by reason kind.

    The first skip of each ``(kind, symbol)`` is logged with its reason, up to
    ``max_logged`` distinct pairs (a bad symbol is named once, not every scan); the
    rest are only counted.
    """

    def __init__(self, max_logged: int = 100) -> None:
        self._kinds = Tally()
        self._logged = Tally(max_kinds=max_logged)  # by (kind, symbol): the first logged

    def record(self, kind: str, symbol: str, reason: str) -> None:
        self._kinds.add(kind)
        if self._logged.add((kind, symbol)):
            log.warning("skipped %s (%s): %s", symbol, kind, reason)

    def counts(self) -> dict[str, int]:
        return dict(sorted(self._kinds.counts().items()))  # type: ignore[arg-type]


class ParallelAnalyzer:
    """Analyzes a universe of symbols with a thread pool, results in scan order."""

    def __init__(
        self,
        cache: SingleFlightCache,
        engine: FeatureEngine,
        plugins: Plugins,
        executor: Executor,
        timeframe: str,
        predict_waits: Samples,
        skips: SkipLog,
    ) -> None:
        self.cache = cache
        self.engine = engine
        self.plugins = plugins
        self.executor = executor
        self.timeframe = timeframe
        self.predict_waits = predict_waits
        self.skips = skips
        self._lock = threading.Lock()
        self._build_seconds = 0.0
        self._builds = 0

    def analyze_all_symbols(self, symbols: Sequence[str]) -> list[Analysis | Skipped]:
        """Every symbol analyzed by the pool; the list is in the order of ``symbols``."""
        return list(self.executor.map(self.analyze_symbol, symbols))

    def analyze_symbol(self, symbol: str) -> Analysis | Skipped:
        timeframe = self.timeframe
        with self.plugins.analyzing(symbol, timeframe):
            try:
                try:
                    klines = self.cache.get_klines(symbol, timeframe)
                except (ExchangeError, TimeoutError) as exc:
                    return self._skip(type(exc).__name__, symbol, str(exc))
                start = time.thread_time()
                try:
                    features = self.engine.build(symbol, timeframe, klines)
                except FeatureError as exc:
                    return self._skip("FeatureError", symbol, str(exc))
                elapsed = time.thread_time() - start
                with self._lock:
                    self._build_seconds += elapsed
                    self._builds += 1
                start = time.perf_counter()
                try:
                    prediction = self.plugins.predict(symbol, features)
                except Exception as exc:  # the model's fault: this symbol, not the scan
                    return self._skip("model", symbol, f"{type(exc).__name__}: {exc}")
                if not math.isfinite(prediction):
                    return self._skip("model", symbol, f"the model answered {prediction!r}")
                self.predict_waits.add(time.perf_counter() - start)
                return Analysis(symbol, klines, features, prediction)
            except Exception as exc:  # a bug must cost one symbol, not the scan
                log.exception("unexpected error analyzing %s", symbol)
                return self._skip("internal", symbol, f"{type(exc).__name__}: {exc}")

    def _skip(self, kind: str, symbol: str, reason: str) -> Skipped:
        self.skips.record(kind, symbol, reason)
        return Skipped(symbol, reason)

    def build_counters(self) -> tuple[int, float]:
        """Feature builds so far and the thread CPU seconds they took."""
        with self._lock:
            return self._builds, self._build_seconds
