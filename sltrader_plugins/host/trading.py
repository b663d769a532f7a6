"""``TradingService``: predictions to confirmed signals, paper orders, PnL, learning.

Runs on the main loop after each scan. A symbol becomes a candidate once per closed
candle (the first scan that sees the candle decides); a candidate is confirmed when at
least two of the higher timeframes (5m, 15m, 1h, read through the cache) trend its way.
Each confirmed signal goes to the ``on_signal`` hook before its paper order is placed.
Realized outcomes (did the next candle close higher?) train the model between scans.
Everything is processed in a canonical order, so decisions are independent of thread
timing and of the number of workers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import attrs
import numpy as np

from sltrader_plugins.cache import SingleFlightCache
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.host.analyzer import Analysis, SkipLog
from sltrader_plugins.host.exchange import ExchangeError
from sltrader_plugins.host.features import FeatureError
from sltrader_plugins.protocols import Clock
from sltrader_plugins.signals import Side, Signal
from sltrader_plugins.timeframes import timeframe_seconds

log = logging.getLogger(__name__)

#: Decisions a run keeps to return (bench_target.py); the digest covers every one.
MAX_KEPT_DECISIONS = 100_000


@attrs.frozen
class TradingConfig:
    buy_threshold: float = 0.62
    sell_threshold: float = 0.38
    confirm_timeframes: tuple[str, ...] = ("5m", "15m", "1h")
    confirm_needed: int = 2
    trend_candles: int = 20
    hold_candles: int = 5
    max_positions: int = 20
    notional: float = 1000.0


@attrs.define
class Position:
    side: Side
    qty: float
    entry: float
    opened: float  #: close time of the candle it was opened on


class TradingService:
    """Owns the portfolio, the pending training samples and the decisions digest.

    Main-loop only: nothing here is shared with worker threads except the cache (which
    is thread-safe) during confirmation.

    :param timer: the wall clock that stamps decisions (``decided_at``); a test's own.
    """

    def __init__(
        self,
        cache: SingleFlightCache,
        model: Any,
        plugins: Plugins,
        executor: Executor,
        clock: Clock,
        base_timeframe: str,
        config: TradingConfig,
        skips: SkipLog,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cache = cache
        self.model = model  # the learner; predictions go through the analyzer
        self.plugins = plugins
        self.executor = executor
        self.clock = clock
        self.timeframe = base_timeframe
        self.step = timeframe_seconds(base_timeframe)
        self.config = config
        self.skips = skips
        self.positions: dict[str, Position] = {}
        self.last_price: dict[str, float] = {}  # only for open positions
        self.realized = 0.0
        self.signals = 0
        self.orders = 0
        self.trained = 0
        self.confirm_reads = 0  #: higher-timeframe reads made to confirm candidates
        #: when the last ``process`` call was done deciding (``timer`` time): its last paper
        #: order, or the end of its decisions when it placed none
        self.decided_at = 0.0
        self._timer = timer
        self._last_order_at: float | None = None
        self._decided: dict[str, float] = {}  # symbol -> close time already decided on
        self._pending: dict[str, deque[tuple[float, np.ndarray]]] = {}
        self._digest = hashlib.sha256()
        #: the last MAX_KEPT_DECISIONS signals and orders, in the order they were made:
        #: ``(kind, *fields)`` as the digest reads them (which covers them all)
        self.decisions: deque[tuple[Any, ...]] = deque(maxlen=MAX_KEPT_DECISIONS)
        self.decisions_made = 0

    # -- one cycle ------------------------------------------------------------------

    def process(self, results: Sequence[Analysis]) -> list[Signal]:
        """Learn from outcomes, close expired positions, confirm and act on candidates."""
        self._last_order_at = None
        by_symbol = {a.symbol: a for a in results}
        self._collect_samples(results)
        self._learn(by_symbol)
        for symbol, analysis in by_symbol.items():
            if symbol in self.positions:
                self.last_price[symbol] = analysis.close
        self._close_expired(by_symbol)
        candidates = self._candidates(results)
        confirmed = self._confirm(candidates)
        signals = []
        for analysis, side in confirmed:
            signal = Signal(
                analysis.symbol, self.timeframe, side, analysis.prediction, self.clock.now()
            )
            signals.append(signal)
            self.signals += 1
            self._record("signal", signal.time, signal.symbol, side, signal.probability)
            self.plugins.signal(signal)
            self._act(analysis, side)
        # A trader is done with a candle when its last order is out; one that placed no
        # order is done when it has decided on every candidate.
        self.decided_at = self._last_order_at if self._last_order_at is not None else self._timer()
        self._forget(by_symbol)
        return signals

    def _candidates(self, results: Sequence[Analysis]) -> list[tuple[Analysis, Side]]:
        out: list[tuple[Analysis, Side]] = []
        for analysis in sorted(results, key=lambda a: a.symbol):
            if self._decided.get(analysis.symbol, -1.0) >= analysis.close_time:
                continue  # this candle was decided on by an earlier scan
            self._decided[analysis.symbol] = analysis.close_time
            if analysis.prediction >= self.config.buy_threshold:
                out.append((analysis, "buy"))
            elif analysis.prediction <= self.config.sell_threshold:
                out.append((analysis, "sell"))
        return out

    def _confirm(self, candidates: list[tuple[Analysis, Side]]) -> list[tuple[Analysis, Side]]:
        counted = list(self.executor.map(self._votes, candidates))
        # Counted here, on the main loop, from what each worker returned: no shared counter.
        self.confirm_reads += sum(reads for _, reads in counted)
        return [
            c
            for c, (votes, _) in zip(candidates, counted, strict=True)
            if votes >= self.config.confirm_needed
        ]

    def _votes(self, candidate: tuple[Analysis, Side]) -> tuple[int, int]:
        """The candidate's votes, and how many higher-timeframe series it read for them."""
        analysis, side = candidate
        votes = reads = 0
        for timeframe in self.config.confirm_timeframes:
            try:
                reads += 1
                klines = self.cache.get_klines(analysis.symbol, timeframe)
                closes = klines.close[-self.config.trend_candles :]
                if len(closes) < self.config.trend_candles or not np.isfinite(closes).all():
                    raise FeatureError(f"{len(closes)} usable {timeframe} candles")
            except (ExchangeError, TimeoutError, FeatureError) as exc:
                # No confirmation without data: an unconfirmed candidate is dropped.
                self.skips.record("confirmation", analysis.symbol, f"{timeframe}: {exc}")
                return 0, reads
            up = closes[-1] > closes.mean()
            votes += up if side == "buy" else not up
        return votes, reads

    # -- paper orders ---------------------------------------------------------------

    def _act(self, analysis: Analysis, side: Side) -> None:
        symbol, price = analysis.symbol, analysis.close
        position = self.positions.get(symbol)
        if position is not None:
            if position.side != side:
                self._close(symbol, price)
            return
        if len(self.positions) >= self.config.max_positions:
            return
        qty = self.config.notional / price
        self.positions[symbol] = Position(side, qty, price, analysis.close_time)
        self.last_price[symbol] = price
        self._order(symbol, side, qty, price)

    def _close_expired(self, by_symbol: dict[str, Analysis]) -> None:
        horizon = self.config.hold_candles * self.step
        for symbol in sorted(self.positions):
            analysis = by_symbol.get(symbol)
            if (
                analysis is not None
                and analysis.close_time - self.positions[symbol].opened >= horizon
            ):
                self._close(symbol, analysis.close)

    def _close(self, symbol: str, price: float) -> None:
        position = self.positions.pop(symbol)
        self.last_price.pop(symbol, None)
        direction = 1.0 if position.side == "buy" else -1.0
        self.realized += direction * position.qty * (price - position.entry)
        self._order(symbol, "sell" if position.side == "buy" else "buy", position.qty, price)

    def _order(self, symbol: str, side: Side, qty: float, price: float) -> None:
        self.orders += 1
        self._record("order", self.clock.now(), symbol, side, qty, price)
        self._last_order_at = self._timer()

    def unrealized(self) -> float:
        total = 0.0
        for symbol, p in self.positions.items():
            direction = 1.0 if p.side == "buy" else -1.0
            total += direction * p.qty * (self.last_price.get(symbol, p.entry) - p.entry)
        return total

    # -- learning from realized outcomes --------------------------------------------

    def _collect_samples(self, results: Sequence[Analysis]) -> None:
        for analysis in results:
            queue = self._pending.setdefault(analysis.symbol, deque(maxlen=8))
            if not queue or queue[-1][0] < analysis.close_time:
                queue.append((analysis.close_time, analysis.features))

    def _learn(self, by_symbol: dict[str, Analysis]) -> None:
        """Label every pending sample whose next candle has closed, then train once."""
        rows: list[tuple[float, str, np.ndarray, int]] = []
        for symbol, queue in self._pending.items():
            if not queue:
                continue
            newest = queue[-1][0]
            klines = None
            while queue and queue[0][0] + self.step <= newest:
                close_time, features = queue.popleft()
                # The series the analyzer just read for this symbol, from this cycle's
                # results rather than a second cache read (no extra demand read).
                klines = klines or getattr(by_symbol.get(symbol), "klines", None)
                label = _label(klines, close_time, self.step) if klines is not None else None
                if label is not None:
                    rows.append((close_time, symbol, features, label))
        if not rows:
            return
        rows.sort(key=lambda row: (row[0], row[1]))
        x = np.vstack([row[2] for row in rows])
        y = np.array([row[3] for row in rows])
        self.model.learn(x, y)
        self.trained += len(rows)

    def _forget(self, by_symbol: dict[str, Analysis]) -> None:
        # Keep state bounded: symbols that left the universe are forgotten.
        for table in (self._decided, self._pending):
            for symbol in [s for s in table if s not in by_symbol and s not in self.positions]:
                del table[symbol]

    def _record(self, kind: str, *fields: Any) -> None:
        self.decisions.append((kind, *fields))
        self.decisions_made += 1
        text = "|".join(f"{f:.6f}" if isinstance(f, float) else str(f) for f in (kind, *fields))
        self._digest.update(text.encode() + b"\n")

    def digest(self) -> str:
        """sha256 over every signal and order, in the order they were made."""
        return self._digest.hexdigest()


def _label(klines: Any, close_time: float, step: int) -> int | None:
    """1 if the candle after the one closing at ``close_time`` closed higher, else 0."""
    closes_at = klines.open_time + step
    i = int(np.searchsorted(closes_at, close_time))
    if i + 1 >= len(closes_at) or closes_at[i] != close_time:
        return None
    return int(klines.close[i + 1] > klines.close[i])
