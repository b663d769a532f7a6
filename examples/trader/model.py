"""The model: scikit-learn's ``LogisticRegression``, trained walk-forward."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from examples.trader.cache import WINDOW
from examples.trader.exchange import BASE_TIMEFRAME, SYMBOLS, ReplayExchange
from examples.trader.features import MIN_CANDLES, FeatureEngine
from sltrader_plugins import Klines

TRAIN_CANDLES = 1500  # per symbol at most: the most recent history is the most relevant


def train_model(exchange: ReplayExchange, features: FeatureEngine) -> Pipeline:
    """P(the next candle closes higher), fitted on candles closed before the replay.

    Walk-forward: the exchange answers only candles closed by its clock's now, and the
    clock stands at the replay's start, so no candle the replay will show is learnt from.
    Each sample is the window the cache would serve at that candle, labelled by the next.
    """
    rows, labels = [], []
    for symbol in SYMBOLS:
        history = exchange.fetch_klines(symbol, BASE_TIMEFRAME, limit=1_000_000)
        close = history.close
        for t in range(max(MIN_CANDLES - 1, history.n - 1 - TRAIN_CANDLES), history.n - 1):
            rows.append(features.build(window(history, t + 1)))
            labels.append(close[t + 1] > close[t])
    model = make_pipeline(StandardScaler(), LogisticRegression())
    return model.fit(np.array(rows), np.array(labels))


def window(klines: Klines, end: int) -> Klines:
    """The candles before index ``end``, at most ``WINDOW`` of them."""
    s = slice(max(0, end - WINDOW), end)
    k = klines
    return Klines(
        k.symbol,
        k.timeframe,
        k.open_time[s],
        k.open[s],
        k.high[s],
        k.low[s],
        k.close[s],
        k.volume[s],
    )
