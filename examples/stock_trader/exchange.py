"""A replay exchange in ccxt's shape over the real daily candles of ``data``, and its clock.

``fetch_ohlcv(symbol, timeframe="1d", since=None, limit=None)`` answers as ccxt's
exchanges do: ``[[ms, open, high, low, close, volume], ...]``, oldest first, **the candle
still forming as the newest row**. The clock stands on a midnight, so the forming daily
candle has just opened: its open is the real open of that day, and nothing has traded
since, so its high, low and close are that open too, and its volume 0. The forming week
is the week's closed days plus that forming day. The forming day's open is a real price
the trader must not decide on (a gap over the night is news): a trader drops that row.

Timeframes ``1d`` and ``1w``; weekly candles open on Monday 00:00 UTC and aggregate the
daily rows of their week. Every request sleeps 3 ms +- 50 % (uniform), a network round
trip; the sleep decides nothing: the answer depends on the clock only.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from examples.stock_trader.data import WINDOW_DAYS, load_windows

DAILY, WEEKLY = "1d", "1w"
DAY = 86_400
SECONDS = {DAILY: DAY, WEEKLY: 7 * DAY}
FIRST_OPEN = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday: every window's first day
#: Days of every window closed before the replay starts: the model's history.
HISTORY_DAYS = 45
#: The replay's length: a daily candle closes per cycle, and the last cycle still has a
#: forming day after it (an exchange always has one).
MAX_CYCLES = WINDOW_DAYS - HISTORY_DAYS - 1
DEFAULT_LIMIT = 500  # rows when no limit is given, as many exchanges do
LATENCY_S = 0.003


def next_close(timeframe: str, now: float) -> float:
    """When the candle of ``timeframe`` forming at ``now`` closes (weeks: the next Monday)."""
    step = SECONDS[timeframe]
    return FIRST_OPEN + ((now - FIRST_OPEN) // step + 1) * step


class ReplayClock:
    """Now is the replay's time, moved one day per cycle by the trader's loop."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self) -> None:
        self._now += DAY


class ReplayExchange:
    """Every symbol of ``data.load_windows()``, on one replay calendar."""

    def __init__(self, latency_s: float = LATENCY_S, seed: int = 0) -> None:
        self.windows = load_windows()
        self.symbols = tuple(self.windows)
        self.clock = ReplayClock(FIRST_OPEN + HISTORY_DAYS * DAY)
        self.latency_s = latency_s
        self.requests = 0
        self._random = random.Random(seed)  # the latency's only: no decision reads it
        self._lock = threading.Lock()  # worker threads request at once

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = DAILY,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[list[float]]:
        """The candles of ``symbol`` up to the one forming now, in ccxt's shape.

        :param since: milliseconds: only candles opening then or later (the first
            ``limit`` of them); without it, the newest ``limit``.
        """
        with self._lock:
            self.requests += 1
            delay = self.latency_s * self._random.uniform(0.5, 1.5)
        time.sleep(delay)
        rows = self.visible_days(symbol)
        opens = FIRST_OPEN + DAY * np.arange(len(rows))
        if timeframe == WEEKLY:
            starts = np.arange(0, len(rows), 7)  # day 0 is a Monday: weeks are 7-day blocks
            last = np.minimum(starts + 6, len(rows) - 1)
            rows = np.column_stack(
                [
                    rows[starts, 0],
                    np.maximum.reduceat(rows[:, 1], starts),
                    np.minimum.reduceat(rows[:, 2], starts),
                    rows[last, 3],
                    np.add.reduceat(rows[:, 4], starts),
                ]
            )
            opens = opens[starts]
        elif timeframe != DAILY:
            raise ValueError(f"timeframe {timeframe!r}: this exchange has {DAILY} and {WEEKLY}")
        ms = (opens * 1000).astype(np.int64)
        keep = np.ones(len(ms), dtype=bool) if since is None else ms >= since
        ms, rows = ms[keep], rows[keep]
        limit = DEFAULT_LIMIT if limit is None else limit
        chosen = slice(0, limit) if since is not None else slice(max(0, len(ms) - limit), None)
        return [[int(t), *row] for t, row in zip(ms[chosen], rows[chosen].tolist(), strict=True)]

    def visible_days(self, symbol: str) -> np.ndarray:
        """The daily rows of ``symbol`` the exchange knows now: the closed days, then the
        day forming (if the window has one left)."""
        ohlcv = self.windows[symbol].ohlcv
        closed = int((self.clock.now() - FIRST_OPEN) // DAY)
        if closed >= WINDOW_DAYS:
            return ohlcv
        return np.vstack([ohlcv[:closed], self.forming_day(ohlcv[closed])])

    def forming_day(self, day: np.ndarray) -> np.ndarray:
        """The day just opened: its open, nothing traded yet."""
        opened = day[0]
        return np.array([opened, opened, opened, opened, 0.0])
