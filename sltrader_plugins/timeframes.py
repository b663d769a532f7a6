"""Timeframes (``"1m"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"1w"``, ``"1M"``) and their candle
boundaries, cut as exchanges cut them.

A candle opens on a boundary and closes on the next one. Boundaries, in UTC:

======  =====================================================================
unit    boundaries
======  =====================================================================
``s``   multiples of the length since the epoch (1970-01-01 00:00)
``m``   multiples of the length since the epoch: ``15m`` at :00, :15, :30, :45
``h``   multiples of the length since the epoch: ``4h`` at 00:00, 04:00, ...
``d``   multiples of the length since the epoch: ``1d`` at 00:00
``w``   Mondays 00:00: multiples of the length since Monday 1970-01-05
``M``   the 1st of a month 00:00: ``1M`` every month, ``3M`` January, April, ...
======  =====================================================================

as Binance and ccxt do. A month has no fixed length: every boundary comes from
:func:`last_close_time` and :func:`next_close_time`, never from a length.
"""

from __future__ import annotations

import functools
import math
import re
import time
from calendar import timegm

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([smhdwM])$")
#: Weeks open on Monday: the first Monday after the epoch (a Thursday) is four days on.
_MONDAY_S = 4 * 86400
#: The longest month, the length :func:`timeframe_seconds` gives a month.
_MONTH_S = 31 * 86400
#: Times a calendar (``time.gmtime``) can cut into months: years 1 to 9998.
_CALENDAR = (-62135596800.0, 253370764800.0)


@functools.lru_cache(maxsize=64)
def _parse(timeframe: str) -> tuple[int, int, int]:
    """``(seconds, offset, months)``: a fixed length and the offset of its boundaries, or
    (``seconds`` 0) a number of calendar months."""
    match = _TIMEFRAME.match(timeframe) if isinstance(timeframe, str) else None
    if match is None:
        raise ValueError(
            f"invalid timeframe {timeframe!r}: expected a count and one of s m h d w M, "
            "e.g. '1m', '15m', '1h', '1d', '1w', '1M'"
        )
    count, unit = int(match.group(1)), match.group(2)
    if unit == "M":
        if 12 % count:
            raise ValueError(f"invalid timeframe {timeframe!r}: months must divide a year")
        return 0, 0, count
    return count * _UNIT_SECONDS[unit], _MONDAY_S if unit == "w" else 0, 0


def timeframe_seconds(timeframe: str) -> int:
    """Length of one candle of ``timeframe`` in seconds; for months the longest (31 days
    a month), a nominal length for sizes and lifetimes, never for a boundary.

    :raises ValueError: ``timeframe`` is not a count followed by one of ``s m h d w M``.
    """
    seconds, _, months = _parse(timeframe)
    return seconds or months * _MONTH_S


def last_close_time(timeframe: str, now: float) -> float:
    """Close time of the newest candle of ``timeframe`` that has closed at ``now``: the
    latest boundary at or before ``now`` (a candle closing exactly at ``now`` has closed).
    """
    seconds, offset, months = _parse(timeframe)
    if _no_boundary(now, months):
        return float(now)
    if months:
        year, month = time.gmtime(math.floor(now))[:2]
        index = (year * 12 + month - 1) // months * months
        return float(timegm((index // 12, index % 12 + 1, 1, 0, 0, 0)))
    return float(math.floor((now - offset) / seconds) * seconds + offset)


def _no_boundary(t: float, months: int) -> bool:
    """A time no boundary can be found for: not finite, or beyond the calendar. Each
    function then answers it unchanged, so that garbage reaches a reader that refuses it
    (``served_fault``, ``Klines.closed_at``), never as an exception of its own."""
    return not math.isfinite(t) or (months > 0 and not _CALENDAR[0] <= t < _CALENDAR[1])


def next_close_time(timeframe: str, now: float) -> float:
    """Close time of the first candle of ``timeframe`` that closes strictly after ``now``."""
    seconds, _, months = _parse(timeframe)
    if _no_boundary(now, months):
        return float(now)
    last = last_close_time(timeframe, now)
    if months:
        year, month = time.gmtime(last)[:2]
        index = year * 12 + month - 1 + months
        return float(timegm((index // 12, index % 12 + 1, 1, 0, 0, 0)))
    return last + seconds


#: The most closes :func:`closes_between` answers: a clock that jumps further (a replay
#: started, a machine that slept) gets the newest ones, not a loop over years of candles.
MAX_CLOSES = 1000


def closes_between(timeframe: str, after: float, until: float) -> list[float]:
    """Close times of the candles of ``timeframe`` that close in ``(after, until]``, the
    newest :data:`MAX_CLOSES` of them.

    What a loop that last looked at ``after`` and now sees ``until`` has to announce
    (``on_candle_close``): a close exactly at ``after`` was the previous look's.
    """
    closes: list[float] = []
    if not (math.isfinite(after) and math.isfinite(until)):
        return closes  # a clock gone wrong: nothing closed that a loop could count
    seconds, _, _ = _parse(timeframe)
    if seconds:
        after = max(after, last_close_time(timeframe, until) - MAX_CLOSES * seconds)
    close = next_close_time(timeframe, after)
    while close <= until:
        closes.append(close)
        following = next_close_time(timeframe, close)
        if following <= close:
            break  # the calendar's end: no further boundary
        close = following
    return closes[-MAX_CLOSES:]


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
    earliest = close_time - CLOSE_TOLERANCE_S
    boundary = last_close_time(timeframe, earliest)
    return boundary if boundary == earliest else next_close_time(timeframe, earliest)


def candle_close(timeframe: str, open_time: float) -> float:
    """Close time of the candle of ``timeframe`` that opens at ``open_time``: one length
    on, or for months the next month's 1st. Not rounded to a boundary: a candle that opens
    off one closes off one, and whoever checks a close against a boundary sees it."""
    seconds, _, _ = _parse(timeframe)
    return open_time + seconds if seconds else next_close_time(timeframe, open_time)
