"""``FeatureEngine``: a handful of indicators of one kline series, with numpy.

Every temporary array comes from ``buffers.empty(n)`` and is filled through numpy's
``out=``: whoever supplies the buffers decides where their memory comes from, and the
maths is the same whoever it is, so the features are too. The feature vector itself is
a fresh array, because it outlives the build and the buffers do not.
"""

from __future__ import annotations

import numpy as np

from sltrader_plugins import FeatureBuffers, Klines, NumpyBuffers

FEATURE_NAMES = ("return_1", "return_5", "close_sma20", "rsi14", "bollinger_b", "atr14_ratio")
MIN_CANDLES = 30  # the longest lookback (20 candles) with room; shorter series are refused
OWN_BUFFERS = NumpyBuffers()  # np.empty per request, nothing to release


class FeatureEngine:
    """Builds the feature vector of one series; it keeps no state, so threads share it."""

    def build(self, klines: Klines, buffers: FeatureBuffers = OWN_BUFFERS) -> np.ndarray:
        n = klines.n
        if n < MIN_CANDLES:
            raise ValueError(f"{klines.symbol}: {n} candles, need at least {MIN_CANDLES}")
        close, high, low = klines.close, klines.high, klines.low

        # Log returns.
        log_close = buffers.empty(n)
        np.log(close, out=log_close)
        returns = buffers.empty(n - 1)
        np.subtract(log_close[1:], log_close[:-1], out=returns)

        # RSI 14, Cutler's (plain means of the gains and of the losses), scaled to 0..1.
        gains = buffers.empty(n - 1)
        np.maximum(returns, 0.0, out=gains)
        losses = buffers.empty(n - 1)
        np.negative(returns, out=losses)
        np.maximum(losses, 0.0, out=losses)
        gain, loss = gains[-14:].mean(), losses[-14:].mean()

        # SMA 20, and Bollinger %b: where the close is between SMA -/+ 2 standard deviations.
        sma = close[-20:].mean()
        deviations = buffers.empty(20)
        np.subtract(close[-20:], sma, out=deviations)
        np.multiply(deviations, deviations, out=deviations)
        std = np.sqrt(deviations.mean())

        # ATR 14: true range = max(high - low, |high - previous close|, |low - previous close|).
        true_range = buffers.empty(n - 1)
        np.subtract(high[1:], low[1:], out=true_range)
        gap = buffers.empty(n - 1)
        np.subtract(high[1:], close[:-1], out=gap)
        np.abs(gap, out=gap)
        np.maximum(true_range, gap, out=true_range)
        np.subtract(low[1:], close[:-1], out=gap)
        np.abs(gap, out=gap)
        np.maximum(true_range, gap, out=true_range)

        # In units of the series' own volatility, so an hourly currency pair and a monthly
        # coin look alike to one model.
        last = close[-1]
        atr = true_range[-14:].mean()
        return np.array(
            [
                returns[-1] * last / atr,
                (log_close[-1] - log_close[-6]) * last / atr,
                (last - sma) / atr,
                gain / (gain + loss) if gain + loss > 0.0 else 0.5,
                (last - sma + 2.0 * std) / (4.0 * std) if std > 0.0 else 0.5,
                atr / true_range.mean(),  # volatility now against the whole window's
            ]
        )
