"""The feature engine's indicators against talipp, an independent TA library.

Every comparison below feeds talipp the series the engine itself works on, transformed
the way ``features.py`` transforms it, and then derives the feature from talipp's value
exactly as ``FeatureEngine._compute`` does:

* ``ret_1/5/15/60``: talipp ``ROC(k)`` on the normalised close ``z = close / close[-1]``;
  the engine's log return is ``log1p(ROC / 100)``.
* ``close_sma10/20/50/200``, ``sma20_slope``, ``sma50_sma200``: talipp ``SMA`` on ``z``.
* ``close_ema12/26/50``: talipp ``EMA`` on ``z``; the feature is ``1 / ema - 1``.
* ``macd``, ``macd_signal``, ``macd_hist``: talipp ``MACD(12, 26, 9)`` on ``z``.
* ``rsi14``: talipp ``RSI(14)`` on the cumulative log return. The engine's RSI smooths
  gains and losses of *log returns* ``log(c_t / c_{t-1})``, not of price differences
  as the textbook (and talipp's) RSI does; differences of the cumulative log return are
  exactly those log returns, so the two definitions coincide on that input.
* ``bollinger_b``, ``bollinger_width``, ``bollinger_squeeze``: talipp ``BB(20, 2)`` on
  ``z`` (population standard deviation in both); the squeeze divides the last width by
  the mean of the last 100 widths.
* ``atr14``: talipp ``ATR(14)`` on candles rescaled by the previous close
  (``high_t / close_{t-1}``, ``low_t / close_{t-1}``, every close 1), whose true range
  is exactly the engine's ``true_range_t / close_{t-1}``.
* ``volume_ratio``, ``volume_z``: talipp ``SMA(20)``, ``SMA(100)``, ``StdDev(100)`` on
  ``log1p(volume)``.

Left out, because talipp has no faithful equivalent: ``vol_20``/``vol_100``/
``vol_ratio`` (the engine's volatility is the *uncentred* root mean square of log
returns, talipp's ``StdDev`` subtracts the mean), ``vol_rank`` (a percentile rank of
that volatility) and ``volume_imbalance`` (sign-of-return weighted volume share).

Tolerances are derived, not guessed (see ``_ema_tail``, ``_mean_errs``, ``_spread``):

* The engine's exponential averages are normalised weighted sums over the last
  ``ema_window`` (480) candles; talipp's are the recursion seeded with an SMA. Both are
  convex combinations of the same inputs whose weights differ by a total of
  ``2 (1 - alpha) ** 480``, so they differ by at most ``(1 - alpha) ** 480 * ptp(x)``:
  about 5e-9 * ptp for the EMA50, and below 1e-15 for spans 9/12/26 and Wilder's 1/14
  (asserted in ``test_truncation_tails_are_negligible``).
* Simple means and variances come from differences of ``np.add.accumulate`` running
  sums; their rounding is measured against ``math.fsum`` (``_mean_errs``, ~1e-15), and
  talipp's running-sum SMA may drift by ``2 n eps max|x|`` (~3e-13). The variance
  ``E[x^2] - mean^2`` inherits both mean errors, and ``|sqrt(v + e) - sqrt(v)| <=
  e / sqrt(v)`` turns that into the standard deviation's error (talipp's ``StdDev`` is
  two-pass, its rounding negligible).
* These bounds on the underlying quantities are propagated through the feature formula
  by evaluating it at every corner of the error box (``_spread``), plus ``FLOOR`` for
  ordinary rounding of O(1) dot products and recursions over 600 terms (~600 * eps).

``_check`` refuses any tolerance above ``MAX_TOL``, so no comparison is vacuous.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from sltrader_plugins.host.exchange import Klines, MarketConfig, ReplayExchange, SimClock
from sltrader_plugins.host.features import FEATURE_NAMES, FeatureEngine
from sltrader_plugins.host.loop import START

pytest.importorskip("talipp")

from talipp import indicators as talipp_ind
from talipp import ohlcv as talipp_ohlcv

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
EPS = float(np.finfo(np.float64).eps)
#: rounding of O(1) dot products / recursions over ~600 terms is ~600 * eps ~ 1.3e-13
FLOOR = 1e-12
#: the largest tolerance any comparison may use: above it a check would prove little
MAX_TOL = 1e-6
N = 600


# -- series -----------------------------------------------------------------------------


def random_walk(seed: int = 20240611, n: int = N) -> Klines:
    """A geometric random walk with opening gaps and wicks; positive, OHLC-consistent."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.empty(n)
    open_[0] = 100.0
    # small gaps between one close and the next open exercise ATR's |high - prev close|
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, 0.002, n - 1))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.004, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.004, n)))
    volume = rng.lognormal(3.0, 0.8, n)
    t = 60.0 * np.arange(n, dtype=np.float64)
    k = Klines("RW_USDT", "1m", t, open_, high, low, close, volume)
    assert k.valid and np.all(high >= np.maximum(open_, close))
    assert np.all(low <= np.minimum(open_, close))
    return k


def replay(symbol: str, timeframe: str) -> Klines:
    """A series of the seeded replay market (as in tests/host/conftest.py)."""
    clock = SimClock(START + 5.0)
    market = MarketConfig(seed=3, start=clock.now(), history_s=64 * 3600.0, horizon_s=7200.0)
    k = ReplayExchange(market, [symbol], clock).fetch_klines(symbol, timeframe, N)
    assert k.n == N
    return k


@pytest.fixture(
    scope="module",
    params=[("random_walk", None), ("BTC_USDT", "1m"), ("1000PEPE-USD", "5m")],
    ids=["random_walk", "replay_BTC_1m", "replay_PEPE_5m"],
)
def case(request: pytest.FixtureRequest) -> tuple[Klines, np.ndarray]:
    name, timeframe = request.param
    k = random_walk() if timeframe is None else replay(name, timeframe)
    return k, FeatureEngine().build(k.symbol, k.timeframe, k)


# -- tolerance helpers ------------------------------------------------------------------


def _ema_tail(alpha: float, window: int, x: np.ndarray) -> float:
    """Bound on |truncated normalised EMA - seeded recursive EMA| of ``x``."""
    return (1.0 - alpha) ** window * float(np.ptp(x))


def _mean_errs(x: np.ndarray, window: int) -> np.ndarray:
    """Error bounds of the engine's window means of ``x``, indexed by the window's last
    candle (NaN where the engine has none).

    The engine takes window sums as differences of ``np.add.accumulate`` running sums,
    whose cancellation loses digits (a worst-case a-priori bound, ``2 n eps sum|x|``,
    is ~1e-11 and would swamp a small standard deviation). So the error is measured:
    the same difference of running sums against the correctly rounded window sum
    (``math.fsum``, within eps/2), plus the rounding of the scaling by ``1 / window``.
    If the engine summed a different window than talipp, the features would differ by
    a whole candle's weight (~1e-3), far beyond these ~1e-15 bounds.
    """
    n = len(x)
    cs = np.add.accumulate(x)
    sums = cs[window:] - cs[:-window]
    exact = np.array([math.fsum(x[i - window + 1 : i + 1]) for i in range(window, n)])
    err = np.full(n, np.nan)
    err[window:] = (np.abs(sums - exact) + EPS * np.abs(exact)) / window + EPS * np.abs(
        sums / window
    )
    return err


def _sma_drift(x: np.ndarray) -> float:
    """Bound on the drift of talipp's running-sum ``SMA``: one rounding of O(max|x|) per
    update, at most ``2 n eps max|x|`` (~3e-13) over the series."""
    return 2.0 * len(x) * EPS * float(np.abs(x).max())


def _sd_errs(x: np.ndarray, window: int, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Error bounds of the engine's ``sqrt(E[x^2] - mean^2)`` (indexed like
    ``_mean_errs``), given the true window ``mean`` and ``sd`` at the same indices:
    ``|sqrt(v + e) - sqrt(v)| <= e / sqrt(v)``."""
    m_err = _mean_errs(x, window)
    var_err = (
        _mean_errs(x * x, window)
        + 2.0 * np.abs(mean) * m_err
        + m_err * m_err
        + 4.0 * EPS * (mean * mean + sd * sd)  # squaring and subtracting
    )
    return var_err / sd


def _spread(fn: Callable[..., float], values: Sequence[float], errs: Sequence[float]) -> float:
    """Largest change of ``fn`` over the corners of the box ``values ± errs``."""
    base = fn(*values)
    return max(
        abs(fn(*(v + s * e for v, s, e in zip(values, signs, errs, strict=True))) - base)
        for signs in itertools.product((-1.0, 1.0), repeat=len(values))
    )


def _check(name: str, got: float, want: float, tol: float) -> None:
    tol += FLOOR
    assert tol <= MAX_TOL, f"{name}: tolerance {tol:.3g} too loose to prove anything"
    assert math.isfinite(got) and math.isfinite(want), (name, got, want)
    assert abs(got - want) <= tol, (
        f"{name} (feature {F[name]}): engine {got!r}, talipp {want!r}, "
        f"diff {got - want:.3g} > tol {tol:.3g}"
    )


def _z(k: Klines) -> np.ndarray:
    return k.close / k.close[-1]


def _run(indicator: type, *args: object, values: Sequence[object]) -> list:
    out = indicator(*args, input_values=list(values))
    return list(out)


# -- the comparisons --------------------------------------------------------------------


def test_truncation_tails_are_negligible() -> None:
    """The engine's windows make the short exponential averages exact to ~1e-15."""
    eng = FeatureEngine()
    L = eng.window
    tails = {
        "ema12": (1 - 2 / 13) ** L,
        "ema26": (1 - 2 / 27) ** L,
        "wilder14": (1 - 1 / 14) ** L,
        "signal9 (160 lags)": (1 - 2 / 10) ** 160,
        # talipp's seeds: EMA9 of the MACD starts at candle 34, its weight decays after
        "talipp signal seed": (1 - 2 / 10) ** (N - 34),
    }
    for name, tail in tails.items():
        assert tail < 1e-14, (name, tail)
    # ...while the EMA50's tail is what its tolerance has to allow for
    assert 1e-9 < (1 - 2 / 51) ** L < 1e-8


def test_returns(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    z = _z(k)
    for lag, name in ((1, "ret_1"), (5, "ret_5"), (15, "ret_15"), (60, "ret_60")):
        roc = _run(talipp_ind.ROC, lag, values=z)[-1]
        _check(name, f[F[name]], math.log1p(roc / 100.0), 0.0)


def test_simple_moving_averages(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    z = _z(k)
    sma = {w: _run(talipp_ind.SMA, w, values=z) for w in (10, 20, 50, 200)}
    err = {w: _mean_errs(z, w) + _sma_drift(z) for w in sma}

    def rel(s: float) -> float:
        return 1.0 / s - 1.0

    for w in (10, 20, 50, 200):
        name = f"close_sma{w}"
        want = rel(sma[w][-1])
        _check(name, f[F[name]], want, _spread(rel, [sma[w][-1]], [err[w][-1]]))

    def ratio(a: float, b: float) -> float:
        return a / b - 1.0

    s20, s20_5 = sma[20][-1], sma[20][-6]
    _check(
        "sma20_slope",
        f[F["sma20_slope"]],
        ratio(s20, s20_5),
        _spread(ratio, [s20, s20_5], [err[20][-1], err[20][-6]]),
    )
    s50, s200 = sma[50][-1], sma[200][-1]
    _check(
        "sma50_sma200",
        f[F["sma50_sma200"]],
        ratio(s50, s200),
        _spread(ratio, [s50, s200], [err[50][-1], err[200][-1]]),
    )


@pytest.mark.parametrize("span", [12, 26, 50])
def test_exponential_moving_averages(case: tuple[Klines, np.ndarray], span: int) -> None:
    k, f = case
    z = _z(k)
    eng = FeatureEngine()
    ema = _run(talipp_ind.EMA, span, values=z)[-1]

    def rel(e: float) -> float:
        return 1.0 / e - 1.0

    tol = _spread(rel, [ema], [_ema_tail(2.0 / (span + 1.0), eng.window, z)])
    _check(f"close_ema{span}", f[F[f"close_ema{span}"]], rel(ema), tol)


def test_macd(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    z = _z(k)
    m = _run(talipp_ind.MACD, 12, 26, 9, values=z)[-1]
    # all tails are < 1e-14 * ptp(z) (test_truncation_tails_are_negligible): FLOOR only
    _check("macd", f[F["macd"]], m.macd, 0.0)
    _check("macd_signal", f[F["macd_signal"]], m.signal, 0.0)
    _check("macd_hist", f[F["macd_hist"]], m.histogram, 0.0)
    # the MACD of a 600-candle walk is far from 0: the comparison has something to see
    assert abs(m.macd) > 1e-5


def test_rsi_of_log_returns(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    log_returns = np.log(k.close[1:] / k.close[:-1])  # the engine's r, computed alike
    path = np.concatenate([[0.0], np.cumsum(log_returns)])
    rsi = _run(talipp_ind.RSI, 14, values=path)[-1]
    # Wilder's tail over 480 returns is < 1e-14 and the ratio g / l is O(1): FLOOR only
    # (cumsum then diff returns each log return to within ~n eps |path| ~ 1e-15)
    _check("rsi14", f[F["rsi14"]], rsi / 100.0, 1e-13)
    assert 0.05 < rsi / 100.0 < 0.95  # a non-degenerate value, not the 0.5 / 1.0 branches


def test_bollinger(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    z = _z(k)
    bands = _run(talipp_ind.BB, 20, 2.0, values=z)
    # per candle (NaN before the first full window): middle band and standard deviation
    cb = np.array([np.nan if b is None else b.cb for b in bands])
    sds = np.array([np.nan if b is None else (b.ub - b.cb) / 2.0 for b in bands])
    s_errs, sd_errs = _mean_errs(z, 20) + _sma_drift(z), _sd_errs(z, 20, cb, sds)
    s20, sd, s_err, sd_err = cb[-1], sds[-1], s_errs[-1], sd_errs[-1]

    def pos(s: float, d: float) -> float:  # features.py: (1 - (s20 - 2 sd)) / (4 sd)
        return (z[-1] - (s - 2.0 * d)) / (4.0 * d)

    def width(s: float, d: float) -> float:
        return 4.0 * d / s

    _check(
        "bollinger_b", f[F["bollinger_b"]], pos(s20, sd), _spread(pos, [s20, sd], [s_err, sd_err])
    )
    _check(
        "bollinger_width",
        f[F["bollinger_width"]],
        width(s20, sd),
        _spread(width, [s20, sd], [s_err, sd_err]),
    )

    # squeeze: the last width over the mean of the last 100 widths (the last included);
    # to first order its relative error is that of the last width plus the largest one
    # of the widths averaged.
    widths = 4.0 * sds[-100:] / cb[-100:]
    rel_err = sd_errs[-100:] / sds[-100:] + s_errs[-100:] / cb[-100:]
    squeeze = widths[-1] / widths.mean()
    tol = abs(squeeze) * (rel_err[-1] + rel_err.max()) * 1.01  # first order, with margin
    _check("bollinger_squeeze", f[F["bollinger_squeeze"]], squeeze, tol)


def test_atr_relative_to_previous_close(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    prev = k.close[:-1]
    # A first candle with close 1 supplies the "previous close" of the next one; every
    # close is 1, so talipp's true range at t is max(h'-l', |h'-1|, |l'-1|) = TR_t / c_{t-1}.
    candles = [talipp_ohlcv.OHLCV(1.0, 1.0, 1.0, 1.0, 0.0)]
    candles += [
        talipp_ohlcv.OHLCV(o / p, h / p, lo / p, 1.0, v)
        for o, h, lo, p, v in zip(
            k.open[1:], k.high[1:], k.low[1:], prev, k.volume[1:], strict=True
        )
    ]
    atr = _run(talipp_ind.ATR, 14, values=candles)[-1]
    # Wilder's tail (< 1e-14 of the TR range, ~1e-2) is far below FLOOR
    _check("atr14", f[F["atr14"]], atr, 0.0)
    assert atr > 1e-5


def test_volume_level_and_zscore(case: tuple[Klines, np.ndarray]) -> None:
    k, f = case
    lv = np.log1p(k.volume)
    m20 = _run(talipp_ind.SMA, 20, values=lv)[-1]
    m100 = _run(talipp_ind.SMA, 100, values=lv)[-1]
    sd100 = _run(talipp_ind.StdDev, 100, values=lv)[-1]
    e20 = _mean_errs(lv, 20)[-1] + _sma_drift(lv)
    e100 = _mean_errs(lv, 100)[-1] + _sma_drift(lv)
    esd = _sd_errs(lv, 100, np.full(len(lv), m100), np.full(len(lv), sd100))[-1]

    def level(m: float) -> float:
        return lv[-1] - m

    def zscore(m: float, d: float) -> float:
        return (lv[-1] - m) / d

    _check("volume_ratio", f[F["volume_ratio"]], level(m20), _spread(level, [m20], [e20]))
    _check(
        "volume_z",
        f[F["volume_z"]],
        zscore(m100, sd100),
        _spread(zscore, [m100, sd100], [e100, esd]),
    )
