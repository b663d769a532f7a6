"""A series through Redis's bytes and back: bit for bit, and nothing else passes."""

from __future__ import annotations

import numpy as np
import pytest
from shared_testkit import T0, digest, series

from sltrader_plugins import Klines
from sltrader_shared import codec


def test_round_trip_is_bit_identical_even_for_odd_floats() -> None:
    n = 6
    open_time = T0 - 60 * np.arange(n, 0, -1, dtype=np.float64)
    odd = np.array([np.nan, -0.0, np.inf, 5e-324, 1 / 3, -np.inf])
    klines = Klines("ETH/USDT", "1m", open_time, odd, odd * 2, odd, odd + 1, odd)
    back = codec.decode(codec.encode(klines), "ETH/USDT", "1m", n, T0)
    assert digest(back) == digest(klines)
    assert not back.close.flags.writeable  # shared between threads, like the cache's


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda b: b[:10], "shorter than a header"),
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:-8], "bytes for"),
        (lambda b: codec.HEADER.pack(codec.MAGIC, T0 + 60, 3) + b[16:], "header says"),
    ],
)
def test_what_is_not_a_stored_series_is_refused(mangle, why: str) -> None:
    value = codec.encode(series("X", "1m", 3, T0))
    with pytest.raises(ValueError, match=why):
        codec.decode(mangle(value), "X", "1m", 3, T0)


def test_a_series_that_cannot_be_served_for_the_question_is_refused() -> None:
    value = codec.encode(series("X", "1m", 5, T0))
    with pytest.raises(ValueError, match="not at"):
        codec.decode(value, "X", "1m", 5, T0 + 60)  # stale
    with pytest.raises(ValueError, match="more than"):
        codec.decode(value, "X", "1m", 4, T0)  # longer than asked


def test_an_empty_series_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="empty"):
        codec.encode(series("X", "1m", 0, T0))
