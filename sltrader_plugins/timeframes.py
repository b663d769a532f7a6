"""Timeframes (``"1m"``, ``"5m"``, ``"15m"``, ``"1h"``, ...) and candle boundaries."""

from __future__ import annotations

import functools
import math
import re

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhdw])$")


# Called on hot paths (every cache read, every fetch) with a handful of distinct values.
@functools.lru_cache(maxsize=64)
def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle of ``timeframe`` in seconds.

    :raises ValueError: if ``timeframe`` is not a count followed by one of ``s m h d w``.
    """
    match = _TIMEFRAME.match(timeframe)
    if match is None:
        raise ValueError(f"invalid timeframe {timeframe!r}: expected e.g. '1m', '15m', '1h'")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def last_close_time(timeframe: str, now: float) -> float:
    """Close time of the newest candle of ``timeframe`` that has closed at ``now``.

    Candles are aligned to the epoch; a candle that closes exactly at ``now`` has closed.
    """
    step = timeframe_seconds(timeframe)
    return float(math.floor(now / step) * step)


def next_close_time(timeframe: str, now: float) -> float:
    """Close time of the first candle of ``timeframe`` that closes strictly after ``now``."""
    return last_close_time(timeframe, now) + timeframe_seconds(timeframe)


def closes_between(timeframe: str, after: float, until: float) -> list[float]:
    """Close times of the candles of ``timeframe`` that close in ``(after, until]``.

    What a loop that last looked at ``after`` and now sees ``until`` has to announce
    (``on_candle_close``): a close exactly at ``after`` was the previous look's.
    """
    step = timeframe_seconds(timeframe)
    closes = []
    close = last_close_time(timeframe, after) + step
    while close <= until:
        closes.append(close)
        close += step
    return closes


#: Close times this close below a boundary name that boundary (exchanges state
#: ``open + interval - 1 ms``); a few milliseconds, far below any candle.
CLOSE_TOLERANCE_S = 0.005


def close_boundary(timeframe: str, close_time: float) -> float:
    """The candle boundary a close time names: ``close_time`` rounded up to it.

    Accepts both conventions: the boundary itself (``open + interval``, used throughout
    sltrader) and an exchange's ``open + interval - 1 ms``. A time more than
    :data:`CLOSE_TOLERANCE_S` past a boundary is not a close time; it rounds up to the
    next one, as a candle still open at that time closes there.
    """
    step = timeframe_seconds(timeframe)
    return float(math.ceil((close_time - CLOSE_TOLERANCE_S) / step) * step)
