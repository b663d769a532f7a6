"""Real daily OHLCV of four US stocks, cut into 131 symbols of 90 trading days each.

The candles are the ``stocks`` sample data of the ``bokeh-sampledata`` package
(``bokeh_sampledata/_data/stocks.csv.gz``): daily open, high, low, close, volume and the
source's adjusted close of AAPL, IBM and MSFT (2000-03-01 .. 2013-03-01, 3270 days each),
GOOG (2004-08-19 .. 2013-03-01, 2148 days) and FB (196 days, too short for one window:
left out). They are Quandl's WIKI prices, which Quandl put in the public domain; the
package records that in its ``licenses/datasets.json``. The file is read as data, with
pandas; the package is never used for anything else.

How 4 series become 131 symbols, honestly:

- **Adjusted.** The file's prices are as traded, so a split shows as a halving (AAPL
  2000 and 2005, MSFT 2003). Each day's open, high, low and close are multiplied by the
  source's ``Adj Close / Close`` of that day, and its volume divided by it, so a split
  or a dividend is no price move.
- **Cut.** Each series is cut into consecutive, non-overlapping windows of 90 trading
  days, the newest window ending on the series' last day (the oldest days left over are
  not used): 36 windows each of AAPL, IBM and MSFT and 23 of GOOG. Each window is a
  symbol named by its ticker and its first real date, ``AAPL-2012-10-18``. No real day is
  in two symbols, so no day the replay shows is in another symbol's training history.
- **Re-dated.** Every window is put on one replay calendar: its first trading day opens
  on Monday 2024-01-01 00:00 UTC, the next one on the next calendar day, and so on: one
  real trading day per replay day, weekends included, because the hook contract's
  candles are a 24/7 exchange's (a daily candle closes every midnight). A replay "week"
  is therefore 7 trading days. Prices and volumes are real; the dates are the replay's.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import numpy as np
import pandas as pd

PACKAGE, DATA_FILE = "bokeh_sampledata", "_data/stocks.csv.gz"
TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")  # FB's 196 days are less than one window
WINDOW_DAYS = 90  # trading days per symbol
COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Window:
    """One symbol: a window of one stock's real days."""

    symbol: str
    ticker: str
    first_date: str  # the real dates it covers
    last_date: str
    ohlcv: np.ndarray  # (WINDOW_DAYS, 5): open, high, low, close, volume; adjusted


def read_stocks() -> pd.DataFrame:
    """The package's file as it is: Ticker, Date, Open, High, Low, Close, Volume, Adj Close."""
    with importlib.resources.files(PACKAGE).joinpath(DATA_FILE).open("rb") as f:
        return pd.read_csv(f, compression="gzip")


def load_windows() -> dict[str, Window]:
    """Every symbol's window, by symbol, in symbol order."""
    table = read_stocks()
    windows = {}
    for ticker in TICKERS:
        days = table[table["Ticker"] == ticker].sort_values("Date")
        factor = (days["Adj Close"] / days["Close"]).to_numpy()
        prices = days[["Open", "High", "Low", "Close"]].to_numpy() * factor[:, None]
        ohlcv = np.column_stack([prices, days["Volume"].to_numpy() / factor])
        dates = days["Date"].to_numpy()
        for end in range(len(days), WINDOW_DAYS - 1, -WINDOW_DAYS):
            start = end - WINDOW_DAYS
            symbol = f"{ticker}-{dates[start]}"
            windows[symbol] = Window(
                symbol, ticker, str(dates[start]), str(dates[end - 1]), ohlcv[start:end].copy()
            )
    return dict(sorted(windows.items()))
