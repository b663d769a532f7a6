from __future__ import annotations

import pytest

from sltrader_plugins import (
    Signal,
    closes_between,
    last_close_time,
    next_close_time,
    timeframe_seconds,
)


@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [("1s", 1), ("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3600), ("4h", 14400), ("1d", 86400)],
)
def test_timeframe_seconds(timeframe, seconds):
    assert timeframe_seconds(timeframe) == seconds


@pytest.mark.parametrize("bad", ["", "m", "0m", "1x", "1.5m", "01m", " 1m"])
def test_invalid_timeframes_are_refused(bad):
    with pytest.raises(ValueError, match="invalid timeframe"):
        timeframe_seconds(bad)


def test_candle_boundaries():
    assert last_close_time("1m", 120.0) == 120.0  # closing exactly now counts as closed
    assert last_close_time("1m", 179.999) == 120.0
    assert next_close_time("1m", 120.0) == 180.0
    assert last_close_time("1h", 7199.0) == 3600.0
    assert next_close_time("5m", 301.0) == 600.0


def test_closes_between_is_open_at_the_start_and_closed_at_the_end():
    assert closes_between("1m", 60.0, 120.0) == [120.0]  # 60 was the previous look's
    assert closes_between("1m", 59.999, 120.0) == [60.0, 120.0]
    assert closes_between("1m", 60.0, 119.999) == []
    assert closes_between("1m", 125.0, 132.5) == []
    assert closes_between("5m", 0.0, 1200.0) == [300.0, 600.0, 900.0, 1200.0]


def test_signal_side_is_validated():
    with pytest.raises(ValueError, match="side"):
        Signal("BTC_USDT", "1m", "hold", 0.5, 0.0)  # type: ignore[arg-type]
    assert Signal("BTC_USDT", "1m", "buy", 0.7, 60.0).symbol == "BTC_USDT"
