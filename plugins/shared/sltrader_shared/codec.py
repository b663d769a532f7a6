"""A series as the bytes stored in Redis, and back, bit for bit.

Layout: a 16-byte header (magic ``SLK1``, the newest candle's close time as a
little-endian float64, the candle count as a little-endian uint32), then the six arrays
(``open_time``, ``open``, ``high``, ``low``, ``close``, ``volume``) as little-endian
float64, one after the other. Raw float64 bytes, not text: a served series must be
bit-identical to the one fetched, or a trader's decisions could change. The Lua scripts
(:mod:`sltrader_shared.scripts`) read the close time straight from the header.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from sltrader_plugins import Klines, served_fault

MAGIC = b"SLK1"
HEADER = struct.Struct("<4sdI")
FIELDS = ("open_time", "open", "high", "low", "close", "volume")
ITEM = 8  # bytes per float64


def encode(klines: Klines) -> bytes:
    """``klines`` as stored (its newest close time in the header).

    :raises ValueError: the series is empty (it has no close time to be served at).
    """
    close_time = klines.last_close_time
    if close_time is None:
        raise ValueError("an empty series is not published")
    body = np.stack([getattr(klines, name) for name in FIELDS]).astype("<f8", copy=False)
    return HEADER.pack(MAGIC, close_time, klines.n) + body.tobytes()


def decode(value: bytes, symbol: str, timeframe: str, limit: int, close_time: float) -> Klines:
    """The series stored as ``value``, checked as the host checks a served series.

    The arrays are read-only views of ``value`` (no copy).

    :raises ValueError: ``value`` is not a stored series, or not one the exchange could
        answer for ``(symbol, timeframe, limit)`` with its newest candle closing at
        ``close_time``.
    """
    if len(value) < HEADER.size:
        raise ValueError(f"{len(value)} bytes, shorter than a header")
    magic, stored_close, n = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise ValueError(f"magic {magic!r}, not {MAGIC!r}")
    if not math.isfinite(stored_close):
        # No candle closes at NaN or infinity, whatever close was asked for.
        raise ValueError(f"header says {stored_close!r}, not a close time")
    if len(value) != HEADER.size + len(FIELDS) * ITEM * n:
        raise ValueError(f"{len(value)} bytes for {n} candles")
    arrays = np.frombuffer(value, dtype="<f8", offset=HEADER.size).reshape(len(FIELDS), n)
    klines = Klines(symbol, timeframe, *arrays)
    if klines.last_close_time != stored_close:
        raise ValueError(f"header says {stored_close!r}, candles {klines.last_close_time!r}")
    reason = served_fault(klines, symbol, timeframe, limit, close_time)
    if reason is not None:
        raise ValueError(reason)
    return klines
