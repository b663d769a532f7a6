"""The trader's own cache: candle frames by ``(symbol, timeframe)``.

A frame is kept until a newer candle of its timeframe should have closed, then fetched
again. Only closed candles go in: the exchange's newest row is the candle still forming,
and a trader that decided on it would decide on a price it may not know yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pandas as pd

from examples.stock_trader.exchange import SECONDS, ReplayClock, next_close
from examples.stock_trader.features import ohlcv_frame

FetchOHLCV = Callable[..., list[list[float]]]  # ccxt's fetch_ohlcv


class FrameCache:
    def __init__(self, fetch_ohlcv: FetchOHLCV, clock: ReplayClock, limits: dict[str, int]) -> None:
        self._fetch, self._clock, self._limits = fetch_ohlcv, clock, limits
        self._frames: dict[tuple[str, str], tuple[pd.DataFrame, float]] = {}
        self._lock = threading.Lock()  # workers read at once; never held while fetching
        self.hits = self.misses = 0

    def get(self, symbol: str, timeframe: str) -> pd.DataFrame:
        """The closed candles of ``(symbol, timeframe)`` up to now."""
        now = self._clock.now()
        with self._lock:
            frame, fresh_until = self._frames.get((symbol, timeframe), (None, 0.0))
            if frame is not None and now < fresh_until:
                self.hits += 1
                return frame
            self.misses += 1
        rows = self._fetch(symbol, timeframe, limit=self._limits[timeframe])
        closed = [r for r in rows if r[0] / 1000 + SECONDS[timeframe] <= now]  # not the forming one
        frame = ohlcv_frame(*np.array(closed).reshape(-1, 6)[:, 1:].T)
        with self._lock:
            self._frames[(symbol, timeframe)] = (frame, next_close(timeframe, now))
        return frame
