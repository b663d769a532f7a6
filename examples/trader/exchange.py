"""A replay "exchange" over real OHLCV candles, and the replay's clock.

The candles are the real market data the ``backtesting`` package ships as CSV files
(AGPL-3.0, so they are read from the installed package, not copied here). The package is
never imported: its import pulls in bokeh, and only its data files are wanted.

The series have different native timeframes (EUR/USD hourly, GOOG daily, BTC-USD monthly)
and a trader's loop has one clock, so the replay puts them all on it the same way: one
real candle per replay hour, in their real order, the last candle of every series closing
at ``REPLAY_END``. Prices and volumes are real; the times are the replay's.
"""

from __future__ import annotations

import csv
import importlib.metadata
import threading
import time
from dataclasses import dataclass

import numpy as np

from sltrader_plugins import Klines, timeframe_seconds

BASE_TIMEFRAME = "1h"  # the replay's candle: the clock moves one per cycle
HOUR = timeframe_seconds(BASE_TIMEFRAME)
#: When every series' last candle closes: a day boundary, so 4h candles align with it.
REPLAY_END = 1_704_067_200  # 2024-01-01 00:00 UTC
#: The newest candles of every series, replayed one per cycle; the older ones are the
#: history the model is trained on. BTC-USD has 156 candles: 36 remain for history.
REPLAY_CANDLES = 120
SOURCES = {"EUR/USD": "EURUSD.csv", "GOOG": "GOOG.csv", "BTC-USD": "BTCUSD.csv"}
SYMBOLS = tuple(SOURCES)


@dataclass(frozen=True)
class Series:
    """One symbol's real candles, oldest first, on the replay's hourly clock."""

    source: str  # the file and the real dates it covers
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def load_series(filename: str) -> Series:
    """Read ``backtesting/test/<filename>`` (columns: date, Open, High, Low, Close, Volume)."""
    dist = importlib.metadata.distribution("backtesting")
    with open(str(dist.locate_file(f"backtesting/test/{filename}")), newline="") as f:
        rows = list(csv.reader(f))[1:]
    ohlcv = np.array([row[1:6] for row in rows], dtype=np.float64).T
    open_time = REPLAY_END - HOUR * np.arange(len(rows), 0, -1, dtype=np.float64)
    return Series(f"{filename} {rows[0][0]} .. {rows[-1][0]}", open_time, *ohlcv)


class ReplayClock:
    """The trader's clock: now is the replay's time, moved only by the loop."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self) -> None:
        self._now += HOUR


class ReplayExchange:
    """The exchange API the trader calls: ``fetch_klines(symbol, timeframe, limit)``.

    Answers the newest ``limit`` candles closed by the clock's now, so nothing can look
    ahead. Higher timeframes aggregate the hourly candles in epoch-aligned blocks, as an
    exchange does. Every request waits ``latency_s``, like a network round trip.
    """

    def __init__(self, latency_s: float = 0.001) -> None:
        self.series = {symbol: load_series(file) for symbol, file in SOURCES.items()}
        self.clock = ReplayClock(REPLAY_END - REPLAY_CANDLES * HOUR)
        self.latency_s = latency_s
        self.requests = 0
        self._lock = threading.Lock()  # worker threads fetch at once

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        time.sleep(self.latency_s)
        with self._lock:
            self.requests += 1
        s = self.series[symbol]
        step = timeframe_seconds(timeframe)
        k = step // HOUR  # hourly candles per candle of `timeframe`
        closed = int(np.searchsorted(s.open_time, self.clock.now() - HOUR, side="right"))
        first = int(-s.open_time[0] % step) // HOUR  # the first candle on a block boundary
        blocks = min(limit, max(0, (closed - first) // k))  # complete blocks only
        start = first + ((closed - first) // k - blocks) * k

        def by_block(a: np.ndarray) -> np.ndarray:
            return a[start : start + blocks * k].reshape(blocks, k)

        return Klines(
            symbol,
            timeframe,
            by_block(s.open_time)[:, 0],
            by_block(s.open)[:, 0],
            by_block(s.high).max(axis=1),
            by_block(s.low).min(axis=1),
            by_block(s.close)[:, -1],
            by_block(s.volume).sum(axis=1),
        )
