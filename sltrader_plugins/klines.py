"""``Klines``: the closed candles of one ``(symbol, timeframe)``, the series every part passes.

Times are epoch seconds. A candle of ``timeframe`` opens at ``open_time`` on a boundary and
closes on the next one (:mod:`sltrader_plugins.timeframes`: weeks open on Monday, months on
the 1st); exchanges that state a close time of ``open + interval - 1 ms`` describe the same
candle (see :func:`sltrader_plugins.close_boundary`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import numpy as np

from sltrader_plugins.timeframes import candle_close, last_close_time, timeframe_seconds


def readonly(array: np.ndarray) -> np.ndarray:
    """``array`` itself, made read-only (for an array nobody else holds)."""
    array.flags.writeable = False
    return array


def _series(values: object) -> np.ndarray:
    # float64 and read-only, without touching the caller's array: a read-only view of it.
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"kline arrays must be one-dimensional, got shape {array.shape}")
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


@attrs.frozen(eq=False)
class Klines:
    """Closed candles of one ``(symbol, timeframe)``, oldest first.

    The arrays become float64 and read-only (a read-only view when given a writeable
    array), so one series can be shared by many threads without copying. All six arrays
    must have the same length.

    :ivar open_time: epoch seconds (divide an exchange's milliseconds by 1000).
    :raises ValueError: arrays of different lengths, or not one-dimensional.
    """

    symbol: str
    timeframe: str
    open_time: np.ndarray = attrs.field(converter=_series)
    open: np.ndarray = attrs.field(converter=_series)
    high: np.ndarray = attrs.field(converter=_series)
    low: np.ndarray = attrs.field(converter=_series)
    close: np.ndarray = attrs.field(converter=_series)
    volume: np.ndarray = attrs.field(converter=_series)
    # Derived once per series, not once per feature build: a series is read by many
    # builds (every cache hit), and these would otherwise be new objects each time.
    n: int = attrs.field(init=False)
    #: every price finite and positive, every volume finite and non-negative
    valid: bool = attrs.field(init=False)
    #: ``(close[:-1], close[1:], high[1:], low[1:], volume[1:])``: one-candle shifts
    shifted: tuple[np.ndarray, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        n = int(self.close.shape[0])
        lengths = {len(a) for a in (self.open_time, self.open, self.high, self.low, self.volume)}
        if lengths != {n}:
            raise ValueError(
                f"{self.symbol} {self.timeframe}: kline arrays differ in length "
                f"(close has {n}, others {sorted(lengths)})"
            )
        timeframe_seconds(self.timeframe)  # a bad timeframe fails here, not in a reader
        object.__setattr__(self, "n", n)
        valid = n == 0 or bool(
            np.all(np.isfinite(self.close))
            and np.all(np.isfinite(self.high))
            and np.all(np.isfinite(self.low))
            and np.all(np.isfinite(self.volume))
            and self.close.min() > 0.0
            and self.low.min() > 0.0
            and self.volume.min() >= 0.0
        )
        object.__setattr__(self, "valid", valid)
        c = self.close
        shifted = (c[:-1], c[1:], self.high[1:], self.low[1:], self.volume[1:])
        object.__setattr__(self, "shifted", shifted)

    def __len__(self) -> int:
        return self.n

    @property
    def last_close_time(self) -> float | None:
        """Close time of the newest candle (its boundary), ``None`` for an empty series."""
        if not self.n:
            return None
        return candle_close(self.timeframe, float(self.open_time[-1]))

    def closed_at(self, now: float) -> Klines:
        """This series without its candles that have not closed at ``now`` (``self`` when
        every candle has): what an exchange that also sends the forming candle meant."""
        last = self.last_close_time
        if last is None or last <= now:
            return self
        # Candles open in order: those opening at or after the last close by now are open.
        keep = int(np.searchsorted(self.open_time, last_close_time(self.timeframe, now)))
        if keep and candle_close(self.timeframe, float(self.open_time[keep - 1])) > now:
            keep -= 1  # an unaligned open time: judged by its own close
        arrays = (self.open_time, self.open, self.high, self.low, self.close, self.volume)
        return Klines(self.symbol, self.timeframe, *(a[:keep] for a in arrays))

    @classmethod
    def from_ohlcv(
        cls, rows: Iterable[Sequence[float]], timeframe: str, now: float, symbol: str
    ) -> Klines:
        """The closed candles of exchange rows in ccxt's shape, ``[[ms, open, high, low,
        close, volume], ...]`` oldest first, as ``fetch_ohlcv`` returns them.

        The candle still forming (an exchange returns it as the newest row) and any other
        that has not closed at ``now`` (epoch seconds) is dropped: never a look-ahead.

        :raises ValueError: a row that is not six numbers, or an open time that is not a
            candle boundary of ``timeframe`` (weeks open on Monday, months on the 1st).
        """
        table = np.asarray(list(rows), dtype=np.float64)
        if table.size == 0:
            table = table.reshape(0, 6)
        if table.ndim != 2 or table.shape[1] != 6:
            raise ValueError(
                f"{symbol} {timeframe}: expected rows of [ms, open, high, low, close, volume], "
                f"got shape {table.shape}"
            )
        opens = table[:, 0] / 1000.0
        for t in opens:
            if last_close_time(timeframe, t) != t:
                raise ValueError(
                    f"{symbol} {timeframe}: open time {t:.3f} is not a candle boundary"
                )
        series = cls(symbol, timeframe, opens, *(table[:, i] for i in range(1, 6)))
        return series.closed_at(now)


def served_fault(
    klines: object, symbol: str, timeframe: str, limit: int, close_time: float
) -> str | None:
    """Why ``klines`` cannot stand for an exchange's answer to ``(symbol, timeframe,
    limit)`` now, its newest closed candle closing at ``close_time``; ``None`` if it can.

    The newest candle must close exactly at ``close_time``: after it, the candle has not
    closed; before it, the series is stale (a trader that fetches gets the newer one).
    """
    if not isinstance(klines, Klines):
        return f"returned a {type(klines).__name__}, not Klines"
    if (klines.symbol, klines.timeframe) != (symbol, timeframe):
        return f"served {klines.symbol!r} {klines.timeframe!r} for {symbol!r} {timeframe!r}"
    if klines.n > limit:
        return f"served {klines.n} candles of {symbol!r} {timeframe!r}, more than {limit}"
    last = klines.last_close_time
    if last != close_time:
        newest = "no candle" if last is None else f"its newest candle closing at {last:.0f}"
        return f"served {symbol!r} {timeframe!r} with {newest}, not at {close_time:.0f}"
    opened = float(klines.open_time[-1])
    if last_close_time(timeframe, opened) != opened:
        return f"served {symbol!r} {timeframe!r} with its newest candle opening off a boundary"
    return None
