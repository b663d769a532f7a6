from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from sltrader_plugins import (
    Klines,
    Signal,
    SingleFlightCache,
    close_boundary,
    closes_between,
    last_close_time,
    next_close_time,
    served_fault,
    timeframe_seconds,
)
from sltrader_plugins.timeframes import MAX_CLOSES


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


def test_a_clock_that_jumps_far_announces_the_newest_closes_only():
    closes = closes_between("1m", 0.0, 1e9)
    assert len(closes) == MAX_CLOSES and closes[-1] == last_close_time("1m", 1e9)
    assert closes == [closes[-1] - 60.0 * k for k in range(MAX_CLOSES - 1, -1, -1)]


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


# -- candles as exchanges cut them: the table in docs/trader.md --------------------------

TRADER_DOC = Path(__file__).resolve().parent.parent / "docs" / "trader.md"


def utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def alignment_rows() -> list[tuple[str, str, str, str]]:
    text = TRADER_DOC.read_text()
    table = text[text.index("| timeframe | boundaries |") :].split("\n\n")[0]
    rows = [[c.strip(" `") for c in line.strip("|").split("|")] for line in table.splitlines()]
    return [(tf, at, opened, closes) for tf, _, at, opened, closes in rows[2:]]


def test_the_alignment_table_covers_every_unit():
    assert {tf[-1] for tf, *_ in alignment_rows()} >= set("mhdwM")


@pytest.mark.parametrize("timeframe, at, opened, closes", alignment_rows())
def test_candles_are_cut_as_the_docs_table_says(timeframe, at, opened, closes):
    assert last_close_time(timeframe, utc(at)) == utc(opened)
    assert next_close_time(timeframe, utc(at)) == utc(closes)
    assert close_boundary(timeframe, utc(closes) - 0.001) == utc(closes)  # ms convention
    assert closes_between(timeframe, utc(opened), utc(closes)) == [utc(closes)]


def test_weeks_open_on_monday_and_months_on_the_first():
    monday = utc("2024-01-01 00:00:00")
    assert datetime.fromtimestamp(monday, timezone.utc).weekday() == 0
    assert closes_between("1w", monday, monday + 5 * 7 * 86400) == [
        monday + k * 7 * 86400 for k in range(1, 6)
    ]
    firsts = closes_between("1M", utc("2023-12-31 00:00:00"), utc("2025-01-01 00:00:00"))
    assert [datetime.fromtimestamp(t, timezone.utc).strftime("%m-%d") for t in firsts] == [
        f"{m:02d}-01" for m in (*range(1, 13), 1)
    ]


@pytest.mark.parametrize("bad", ["5M", "0w", "1y", "1W"])
def test_calendar_timeframes_that_do_not_cut_a_year_are_refused(bad):
    with pytest.raises(ValueError, match="invalid timeframe"):
        last_close_time(bad, 0.0)


def rows_of(timeframe: str, opens: list[float]) -> list[list[float]]:
    """ccxt's ``fetch_ohlcv`` rows opening at ``opens``: ms, then o, h, l, c, v."""
    return [[t * 1000, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0] for i, t in enumerate(opens)]


def test_from_ohlcv_drops_the_forming_candle():
    week = 7 * 86400
    monday = utc("2024-03-11 00:00:00")
    now = utc("2024-03-20 12:00:00")  # a Wednesday: the week of the 18th is forming
    rows = rows_of("1w", [monday - week, monday, monday + week])
    klines = Klines.from_ohlcv(rows, "1w", now, "BTC/USDT")
    assert klines.n == 2 and klines.last_close_time == monday + week <= now
    assert klines.close.tolist() == [10.5, 11.5] and klines.open_time[0] == monday - week
    every = Klines.from_ohlcv(rows, "1w", monday + 2 * week, "BTC/USDT")  # it closed now
    assert every.n == 3


def test_from_ohlcv_refuses_rows_that_are_not_candles():
    with pytest.raises(ValueError, match="not a candle boundary"):
        # epoch-aligned weeks open on Thursday: not Binance's
        Klines.from_ohlcv(rows_of("1w", [7 * 86400.0]), "1w", 1e9, "X")
    with pytest.raises(ValueError, match="expected rows"):
        Klines.from_ohlcv([[0, 1, 2, 3]], "1m", 1e9, "X")
    assert Klines.from_ohlcv([], "1M", 1e9, "X").n == 0


class Forming:
    """An exchange that answers with the candle still forming, as real ones do."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.requests = 0

    def fetch(self, symbol: str, timeframe: str, limit: int) -> Klines:
        self.requests += 1
        forming = last_close_time(timeframe, self.clock.t)
        opens = []
        t = forming
        for _ in range(limit):
            opens.insert(0, t)
            t = last_close_time(timeframe, t - 1)
        return Klines.from_ohlcv(rows_of(timeframe, opens), timeframe, 1e12, symbol)  # all


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def test_the_cache_never_serves_a_candle_that_has_not_closed(caplog):
    clock = Clock(utc("2024-03-20 12:00:00"))
    exchange = Forming(clock)
    cache = SingleFlightCache(exchange.fetch, clock, 16, "1h", default_limit=5)
    for timeframe in ("1h", "1w", "1M"):
        klines = cache.get_klines("X", timeframe)
        assert klines.last_close_time == last_close_time(timeframe, clock.t)
        assert klines.n == 4  # the forming fifth is dropped
    assert cache.stats().unclosed == 3
    assert caplog.text.count("has not closed yet") == 1


@pytest.mark.parametrize(
    "timeframe, first, fresh_until",
    [
        ("1w", "2024-03-12 09:00:00", "2024-03-18 00:00:00"),  # Tuesday to Monday
        ("1M", "2024-02-02 09:00:00", "2024-03-01 00:00:00"),  # the 2nd to the 1st
    ],
)
def test_a_weekly_or_monthly_series_is_fresh_until_its_next_open(timeframe, first, fresh_until):
    clock = Clock(utc(first))
    exchange = Forming(clock)
    cache = SingleFlightCache(exchange.fetch, clock, 16, "1h", default_limit=5)
    cache.get_klines("X", timeframe)
    clock.t = utc(fresh_until) - 1  # the last second before the next candle closes
    cache.get_klines("X", timeframe)
    assert exchange.requests == 1
    clock.t = utc(fresh_until)
    assert cache.get_klines("X", timeframe).last_close_time == utc(fresh_until)
    assert exchange.requests == 2


def test_a_served_monthly_series_must_open_on_the_first():
    close = utc("2024-03-01 00:00:00")
    opens = [utc("2024-01-01 00:00:00"), utc("2024-02-02 00:00:00")]  # the 2nd: off
    ones = [1.0, 1.0]
    klines = Klines("X", "1M", opens, ones, ones, ones, ones, ones)
    assert klines.last_close_time == close  # the next 1st, but the candle is no month's
    assert "off a boundary" in served_fault(klines, "X", "1M", 10, close)


@pytest.mark.parametrize("timeframe", ["1m", "1w", "1M"])
@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf"), 1e18])
def test_a_time_with_no_boundary_is_answered_unchanged_never_raised(timeframe, garbage):
    if timeframe != "1M" and garbage == 1e18:
        return  # a fixed length has boundaries that far out
    assert last_close_time(timeframe, garbage) == garbage or garbage != garbage
    assert next_close_time(timeframe, garbage) == garbage or garbage != garbage
    if garbage == 1e18:  # finite, far: the newest closes, a bounded number of them
        assert 0 < len(closes_between(timeframe, 0.0, garbage)) <= MAX_CLOSES
    else:
        assert closes_between(timeframe, 0.0, garbage) == []
    opens = [garbage]
    ones = [1.0]
    served = Klines("X", timeframe, opens, ones, ones, ones, ones, ones)
    assert served_fault(served, "X", timeframe, 10, utc("2024-03-01 00:00:00")) is not None
