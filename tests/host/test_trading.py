from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sltrader_plugins import Plugins
from sltrader_plugins.host.analyzer import Analysis, SkipLog
from sltrader_plugins.host.exchange import ExchangeError, Klines, SimClock
from sltrader_plugins.host.trading import TradingConfig, TradingService
from sltrader_plugins.manager import PluginManager


def klines(symbol: str, closes, timeframe: str = "1m", end: float = 6000.0) -> Klines:
    c = np.asarray(closes, dtype=np.float64)
    step = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}[timeframe]
    t = end - step * np.arange(len(c), 0, -1, dtype=np.float64)
    return Klines(symbol, timeframe, t, c, c, c, c, np.ones(len(c)))


class Trend:
    """Higher timeframes trend up for 'UP' symbols, fail for 'BAD', else down."""

    def get_klines(self, symbol, timeframe):
        if symbol.startswith("BAD"):
            raise ExchangeError("502")
        up = symbol.startswith("UP")
        return klines(symbol, np.linspace(1, 2, 30) if up else np.linspace(2, 1, 30), timeframe)


def analysis(symbol: str, p: float, minute: int, price: float = 10.0) -> Analysis:
    k = klines(symbol, np.full(5, price), end=60.0 * minute)
    return Analysis(symbol, k, np.zeros(28), p)


class Timer:
    """A wall clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def timer():
    return Timer()


@pytest.fixture
def service(timer):
    class Learner:
        def __init__(self):
            self.rows = 0

        def learn(self, x, y):
            self.rows += len(y)

    clock = SimClock(0.0)
    pool = ThreadPoolExecutor(2)
    s = TradingService(
        Trend(),
        Learner(),
        Plugins(PluginManager()),
        pool,
        clock,
        "1m",
        TradingConfig(hold_candles=2, max_positions=2),
        SkipLog(),
        timer=timer,
    )
    yield s
    pool.shutdown()


def test_confirmed_signals_orders_and_pnl(service):
    signals = service.process([analysis("UP1", 0.9, 10), analysis("DOWN1", 0.1, 10)])
    assert [(s.symbol, s.side) for s in signals] == [("DOWN1", "sell"), ("UP1", "buy")]
    assert service.orders == 2 and set(service.positions) == {"UP1", "DOWN1"}
    # The same candle is not decided twice.
    assert service.process([analysis("UP1", 0.9, 10), analysis("DOWN1", 0.1, 10)]) == []
    # Max positions: a third candidate is confirmed but gets no order.
    service.process([analysis("UP2", 0.9, 11), analysis("UP1", 0.5, 11, 11.0)])
    assert service.signals == 3 and service.orders == 2
    assert service.unrealized() == pytest.approx(100.0)  # UP1 100 units, +1 each
    # After two candles UP1 closes at 12: +200 realized; DOWN1 was not analyzed: stays.
    service.process([analysis("UP1", 0.5, 12, 12.0), analysis("DOWN1", 0.5, 11, 10.0)])
    assert service.realized == pytest.approx(200.0)
    assert "UP1" not in service.positions and service.orders == 3
    assert service.model.rows > 0  # outcomes were learned


def test_opposite_signal_closes(service):
    service.process([analysis("UP1", 0.9, 10)])
    # DOWN-trending confirmation for a sell of an 'UP' symbol fails; use the price drop
    service.config = TradingConfig(confirm_needed=0, hold_candles=50)
    service.process([analysis("UP1", 0.1, 11, 8.0)])
    assert "UP1" not in service.positions
    assert service.realized == pytest.approx(-200.0)


def test_unconfirmed_and_failing_confirmation(service):
    assert service.process([analysis("UP1", 0.1, 10)]) == []  # sell against an up-trend
    assert service.process([analysis("BAD1", 0.9, 10)]) == []
    assert service.skips.counts() == {"confirmation": 1}


def test_digest_is_order_independent_of_input_order(service):
    a = [analysis("UP1", 0.9, 10), analysis("DOWN1", 0.1, 10)]
    service.process(a)
    digest = service.digest()
    clock = SimClock(0.0)
    other = TradingService(
        Trend(),
        service.model,
        Plugins(PluginManager()),
        ThreadPoolExecutor(1),
        clock,
        "1m",
        TradingConfig(hold_candles=2, max_positions=2),
        SkipLog(),
    )
    other.process(list(reversed(a)))
    assert other.digest() == digest


def test_decided_at_is_the_last_order_or_the_end_of_the_decisions(service, timer):
    stamps = iter([5.0, 7.0])
    order = service._order

    def timed_order(*args):
        timer.now = next(stamps)  # the clock moves while orders go out
        order(*args)

    service._order = timed_order
    service.process([analysis("UP1", 0.9, 10), analysis("DOWN1", 0.1, 10)])
    timer.now = 9.0
    assert service.orders == 2 and service.decided_at == 7.0  # the last order's time
    # No order (the candle was decided on): done when its decisions are.
    service.process([analysis("UP1", 0.9, 10)])
    assert service.decided_at == 9.0


def test_confirmation_reads_are_counted(service):
    service.process([analysis("UP1", 0.9, 10), analysis("BAD1", 0.9, 10), analysis("X", 0.5, 10)])
    # Three timeframes for a candidate; a failing one stops at its first; no candidate none.
    assert service.confirm_reads == 3 + 1
