"""``FeatureEngine``: technical-indicator features of one kline series, with numpy.

Every intermediate array of a build comes from a :class:`sltrader_plugins.FeatureBuffers`
(``plugins.build_features``: a plugin's, which it redoes on the host's own when they
fail, or :class:`sltrader_plugins.NumpyBuffers`), filled through numpy ``out=`` arguments,
so a build given pooled buffers allocates almost nothing else. The maths is the same
whatever the buffers are, so features are
bit-identical with and without a plugin. The returned feature vector is a fresh copy.

Indicators are computed on the close normalised by the last close, which makes every
feature scale-free (a 0.001 coin and a 50 000 coin look alike to the model).
Exponential averages (EMA 12/26/50, MACD and its signal line, Wilder's RSI and ATR) are
the ``adjust=True`` kind over the last ``ema_window`` candles: a weighted sum with
exponentially decaying, normalised weights, evaluated as one matrix product.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from sltrader_plugins.buffers import DEFAULT_BUFFERS
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.klines import Klines
from sltrader_plugins.protocols import FeatureBuffers

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_15",
    "ret_60",
    "close_sma10",
    "close_sma20",
    "close_sma50",
    "close_sma200",
    "sma20_slope",
    "sma50_sma200",
    "close_ema12",
    "close_ema26",
    "close_ema50",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi14",
    "bollinger_b",
    "bollinger_width",
    "bollinger_squeeze",
    "atr14",
    "vol_20",
    "vol_100",
    "vol_ratio",
    "vol_rank",
    "volume_ratio",
    "volume_z",
    "volume_imbalance",
)
N_FEATURES = len(FEATURE_NAMES)
_F64 = np.dtype(np.float64)


class FeatureError(ValueError):
    """The series cannot be turned into features (too short, NaN, non-positive prices)."""


def ema_weights(span: float, window: int, alpha: float | None = None) -> np.ndarray:
    """Normalised EMA weights for the last ``window`` values, oldest first."""
    a = 2.0 / (span + 1.0) if alpha is None else alpha
    w = (1.0 - a) ** np.arange(window - 1, -1, -1, dtype=np.float64)
    return w / w.sum()


class FeatureEngine:
    """Builds the feature vector of one series; thread-safe (no state but counters).

    :param plugins: the trader's plugins, or ``None`` for the host's own buffers only.
    :param min_candles: the shortest series accepted.
    :param ema_window: how many candles the exponential averages weigh.
    """

    def __init__(
        self, plugins: Plugins | None = None, min_candles: int = 500, ema_window: int = 480
    ) -> None:
        if min_candles < 300 or ema_window >= min_candles:
            raise ValueError("need min_candles >= 300 and ema_window < min_candles")
        self._plugins = plugins
        self.min_candles = min_candles
        self.window = ema_window
        L = ema_window
        w12, w26, w50 = (ema_weights(s, L) for s in (12, 26, 50))
        macd = w12 - w26
        # The signal line is EMA9 of the MACD line, itself linear in the closes, so its
        # weights are the convolution of both (truncated to the window).
        w9 = ema_weights(9, 160)
        signal = np.zeros(L)
        for lag, weight in enumerate(w9[::-1]):
            signal[: L - lag] += weight * macd[lag:]
        self._ema_matrix = np.ascontiguousarray(np.vstack([w12, w26, w50, macd, signal]))
        self._wilder = ema_weights(0, L, alpha=1.0 / 14.0).reshape(1, L)
        self._layouts: dict[int, _Layout] = {}
        self._layouts_lock = threading.Lock()

    # -- the hook call site ---------------------------------------------------------

    def build(self, symbol: str, timeframe: str, klines: Klines) -> np.ndarray:
        """The feature vector (``N_FEATURES`` float64) of ``klines``.

        :raises FeatureError: the series is too short, empty, or has NaN/inf/non-positive
            prices.
        """
        self.validate(klines)
        if self._plugins is None:
            return self._compute(klines, DEFAULT_BUFFERS)
        return self._plugins.build_features(
            symbol,
            timeframe,
            klines.n,
            self._compute,
            klines,
            data_errors=(FeatureError,),  # the host's own buffers would fail alike
        )

    def validate(self, klines: Klines) -> None:
        n = klines.n
        if n < self.min_candles:
            raise FeatureError(
                f"{klines.symbol} {klines.timeframe}: {n} candles, need at least {self.min_candles}"
            )

    def _layout(self, n: int) -> _Layout:
        layout = self._layouts.get(n)
        if layout is None:
            layout = _Layout(n, self._ema_matrix, self._wilder)
            with self._layouts_lock:
                if len(self._layouts) >= 8:  # series lengths are few; stay bounded anyway
                    self._layouts.clear()
                self._layouts[n] = layout
        return layout

    # -- the maths ------------------------------------------------------------------

    def _compute(self, k: Klines, buffers: FeatureBuffers) -> np.ndarray:
        """The features; every temporary comes from ``buffers`` and is filled in place."""
        c, v = k.close, k.volume
        lay = self._layout(k.n)
        n, n1 = lay.n, lay.n1
        empty = buffers.empty

        if not k.valid:
            raise FeatureError(
                f"{k.symbol} {k.timeframe}: NaN, infinite or non-positive prices or volume"
            )
        last = c.item(-1)
        c0, c1, h1, l1, v1 = k.shifted

        z = empty(n)
        # numpy writes float64 results into a float32 ``out=`` without complaint: a
        # plugin's wrong dtype would change the features silently instead of failing.
        if z.dtype is not _F64:
            raise TypeError(f"buffers.empty returned {z.dtype}, not float64")
        np.divide(c, last, out=z)
        logz = empty(n)
        np.log(z, out=logz)
        r = empty(n1)
        np.divide(c1, c0, out=r)
        np.log(r, out=r)

        # Rolling means and variances from inclusive cumulative sums.
        cs = empty(n)
        np.add.accumulate(z, out=cs)
        sma20 = _rolling_mean(cs, 20, empty(lay.n20))
        sma50 = _rolling_mean(cs, 50, empty(lay.n50))
        sq = empty(n)
        np.multiply(z, z, out=sq)
        cs2 = empty(n)
        np.add.accumulate(sq, out=cs2)
        std20 = _rolling_mean(cs2, 20, empty(lay.n20))
        mean_sq = empty(lay.n20)
        np.multiply(sma20, sma20, out=mean_sq)
        np.subtract(std20, mean_sq, out=std20)
        np.maximum(std20, 0.0, out=std20)
        np.sqrt(std20, out=std20)
        width = empty(lay.n20)
        np.divide(std20, sma20, out=width)
        np.multiply(width, 4.0, out=width)
        width_mean = empty(1)
        np.matmul(lay.mean100_n20, width, out=width_mean)

        # Exponential averages of the close: one product with zero-padded weights.
        emas = empty(5)
        np.matmul(lay.ema_n, z, out=emas)

        # Wilder's RSI: smoothed gains over smoothed losses.
        gains = empty(n1)
        np.maximum(r, 0.0, out=gains)
        losses = empty(n1)
        np.minimum(r, 0.0, out=losses)
        np.negative(losses, out=losses)
        avg_gain = empty(1)
        np.matmul(lay.wilder_n1, gains, out=avg_gain)
        avg_loss = empty(1)
        np.matmul(lay.wilder_n1, losses, out=avg_loss)

        # Average true range, relative to the previous close.
        tr = empty(n1)
        spread = empty(n1)
        np.subtract(h1, l1, out=tr)
        np.subtract(h1, c0, out=spread)
        np.abs(spread, out=spread)
        np.maximum(tr, spread, out=tr)
        np.subtract(l1, c0, out=spread)
        np.abs(spread, out=spread)
        np.maximum(tr, spread, out=tr)
        np.divide(tr, c0, out=tr)
        atr = empty(1)
        np.matmul(lay.wilder_n1, tr, out=atr)

        # Realised volatility (20 and 100 candles) and where the current one ranks.
        r2 = empty(n1)
        np.multiply(r, r, out=r2)
        cr2 = empty(n1)
        np.add.accumulate(r2, out=cr2)
        vol_series = empty(lay.n21)
        np.subtract(cr2[20:], cr2[:-20], out=vol_series)
        below = empty(lay.n21, np.bool_)
        np.less(vol_series, vol_series.item(-1), out=below)
        n_below = np.count_nonzero(below)

        # Volume: level against its mean, z-score, and signed-volume imbalance.
        lv = empty(n)
        np.log1p(v, out=lv)
        clv = empty(n)
        np.add.accumulate(lv, out=clv)
        lv2 = empty(n)
        np.multiply(lv, lv, out=lv2)
        clv2 = empty(n)
        np.add.accumulate(lv2, out=clv2)
        signed = empty(n1)
        np.sign(r, out=signed)
        np.multiply(signed, v1, out=signed)
        signed_sum = empty(1)
        np.matmul(lay.sum20_n1, signed, out=signed_sum)
        volume_sum = empty(1)
        np.matmul(lay.sum20_n1, v1, out=volume_sum)

        # The feature vector is the caller's own: a fresh array, never a buffer.
        out = np.empty(N_FEATURES)
        lz = logz.item(-1)
        out[0] = r.item(-1)
        out[1] = lz - logz.item(-6)
        out[2] = lz - logz.item(-16)
        out[3] = lz - logz.item(-61)
        out[4] = 1.0 / ((cs.item(-1) - cs.item(-11)) * 0.1) - 1.0
        s20 = sma20.item(-1)
        out[5] = 1.0 / s20 - 1.0
        s50 = sma50.item(-1)
        out[6] = 1.0 / s50 - 1.0
        s200 = (cs.item(-1) - cs.item(-201)) * 0.005
        out[7] = 1.0 / s200 - 1.0
        out[8] = s20 / sma20.item(-6) - 1.0
        out[9] = s50 / s200 - 1.0
        out[10] = 1.0 / emas.item(0) - 1.0
        out[11] = 1.0 / emas.item(1) - 1.0
        out[12] = 1.0 / emas.item(2) - 1.0
        out[13] = emas.item(3)
        out[14] = emas.item(4)
        out[15] = emas.item(3) - emas.item(4)
        g, loss = avg_gain.item(0), avg_loss.item(0)
        out[16] = (0.5 if g == 0.0 else 1.0) if loss == 0.0 else 1.0 - 1.0 / (1.0 + g / loss)
        sd = std20.item(-1)
        out[17] = 0.5 if sd == 0.0 else (1.0 - (s20 - 2.0 * sd)) / (4.0 * sd)
        w = width.item(-1)
        out[18] = w
        out[19] = w / width_mean.item(0) if w > 0.0 else 1.0
        out[20] = atr.item(0)
        v20 = math.sqrt(max(0.0, (cr2.item(-1) - cr2.item(-21)) * 0.05))
        v100 = math.sqrt(max(0.0, (cr2.item(-1) - cr2.item(-101)) * 0.01))
        out[21] = v20
        out[22] = v100
        out[23] = v20 / v100 if v100 > 0.0 else 1.0
        out[24] = n_below * lay.inv_n21
        m20 = (clv.item(-1) - clv.item(-21)) * 0.05
        m100 = (clv.item(-1) - clv.item(-101)) * 0.01
        var100 = max(0.0, (clv2.item(-1) - clv2.item(-101)) * 0.01 - m100 * m100)
        out[25] = lv.item(-1) - m20
        out[26] = (lv.item(-1) - m100) / math.sqrt(var100) if var100 > 0.0 else 0.0
        total = volume_sum.item(0)
        out[27] = signed_sum.item(0) / total if total > 0.0 else 0.0
        return out


def _rolling_mean(cumsum: np.ndarray, window: int, out: np.ndarray) -> np.ndarray:
    """Mean of every full ``window`` from an inclusive cumulative sum, written to ``out``."""
    np.subtract(cumsum[window:], cumsum[:-window], out=out)
    np.multiply(out, 1.0 / window, out=out)  # 1/20 and 1/50 are exact: same bits as 0.05
    return out


class _Layout:
    """Sizes and zero-padded weight rows for one series length, built once per length.

    Padding the weights to the whole series lets every weighted sum be a product with
    a whole buffer, so a build creates no slice views for them.
    """

    def __init__(self, n: int, ema_matrix: np.ndarray, wilder: np.ndarray) -> None:
        self.n = n
        self.n1 = n - 1
        self.n20 = n - 20
        self.n50 = n - 50
        self.n21 = n - 21
        self.inv_n21 = 1.0 / (n - 21)
        window = ema_matrix.shape[1]
        self.ema_n = np.zeros((ema_matrix.shape[0], n))
        self.ema_n[:, n - window :] = ema_matrix
        self.wilder_n1 = np.zeros((1, n - 1))
        self.wilder_n1[:, n - 1 - window :] = wilder
        self.mean100_n20 = np.zeros((1, n - 20))
        self.mean100_n20[:, -100:] = 0.01
        self.sum20_n1 = np.zeros((1, n - 1))
        self.sum20_n1[:, -20:] = 1.0
