"""35 indicators of a daily candle frame, written the pandas way.

Every indicator is causal (rolling windows, ``ewm``, ``diff`` and ``shift`` look back
only), so a row's features are the same whether the frame ends there or goes on: the
model is trained on the rows of the history frame, and the trader predicts on the last
row of the frame it reads, with the same code. The longest lookback is 21 rows (a
20-day window of returns); earlier rows have NaN features and are not trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LAGS = (1, 2, 3, 5, 10, 20)  # log returns over these many days
WARMUP = 21  # rows before every feature is defined


def ohlcv_frame(
    open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> pd.DataFrame:
    """Closed daily candles, oldest first, as the indicators read them."""
    return pd.DataFrame({"open": open, "high": high, "low": low, "close": close, "volume": volume})


def indicators(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Every indicator of every row, by name (``FEATURE_NAMES`` order)."""
    o, h, low, c, v = (frame[name] for name in ("open", "high", "low", "close", "volume"))
    prev = c.shift()
    delta = c.diff()
    log_close = np.log(c)
    f = {f"return_{k}": log_close.diff(k) for k in LAGS}

    # Trend: the close against moving averages (ratios: no offset that a tree would not
    # learn anyway), MACD in units of the price.
    for w in (5, 10, 20):
        f[f"close_sma{w}"] = c / c.rolling(w).mean()
    ema12, ema26 = c.ewm(span=12).mean(), c.ewm(span=26).mean()
    f["close_ema12"], f["close_ema26"] = c / ema12, c / ema26
    macd = (ema12 - ema26) / c
    macd_signal = macd.ewm(span=9).mean()
    f["macd"], f["macd_signal"], f["macd_hist"] = macd, macd_signal, macd - macd_signal

    # Momentum: Wilder's RSI (exponential means of gains and losses), stochastic %K/%D.
    gains = (delta + delta.abs()) / 2  # max(delta, 0), a third of clip()'s cost in pandas
    losses = gains - delta
    for w in (7, 14):
        gain, loss = gains.ewm(alpha=1 / w).mean(), losses.ewm(alpha=1 / w).mean()
        f[f"rsi{w}"] = gain / (gain + loss)
    low14, high14 = low.rolling(14).min(), h.rolling(14).max()
    stoch = (c - low14) / (high14 - low14)
    f["stoch_k"], f["stoch_d"] = stoch, stoch.rolling(3).mean()

    # Volatility: Bollinger %b and width, ATR, realised volatility of returns.
    sma20, std20 = c.rolling(20).mean(), c.rolling(20).std()
    f["bollinger_b"] = (c - sma20) / (4 * std20) + 0.5
    f["bollinger_width"] = 4 * std20 / sma20
    true_range = np.maximum(h, prev) - np.minimum(low, prev)
    f["atr14"] = true_range.ewm(alpha=1 / 14).mean() / c
    f["atr_ratio"] = true_range.rolling(5).mean() / true_range.rolling(20).mean()
    returns = f["return_1"]
    vol5, vol20 = returns.rolling(5).std(), returns.rolling(20).std()
    f["volatility5"], f["volatility20"], f["volatility_ratio"] = vol5, vol20, vol5 / vol20

    # Volume: against its means, its z-score, on-balance volume's recent slope.
    volume20 = v.rolling(20).mean()
    f["volume_sma5"], f["volume_sma20"] = v / v.rolling(5).mean(), v / volume20
    f["volume_z20"] = (v - volume20) / v.rolling(20).std()
    f["obv_slope10"] = (np.sign(delta) * v).rolling(10).sum() / v.rolling(10).sum()

    # The candle itself, and where the close stands in the last 20 days.
    f["close_in_range"] = (c - low) / (h - low)
    f["gap"] = o / prev
    f["range"] = (h - low) / c
    f["from_high20"] = c / h.rolling(20).max()
    f["from_low20"] = c / low.rolling(20).min()
    f["up_days10"] = (delta > 0).rolling(10).mean()
    return f


#: The names, in order, as indicators() makes them (of a dummy frame: one list to keep).
FEATURE_NAMES = tuple(indicators(ohlcv_frame(*np.ones((5, WARMUP)))))


def feature_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row's features, as the model is trained on them."""
    return pd.DataFrame(indicators(frame))


def latest_features(frame: pd.DataFrame) -> np.ndarray:
    """The features of the frame's newest candle, in ``FEATURE_NAMES`` order."""
    return np.array([series.iat[-1] for series in indicators(frame).values()])
