"""``TradingService``: threshold signals, confirmed on a higher timeframe; paper orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from examples.trader.analyzer import Prediction
from examples.trader.cache import IntelligentCache
from examples.trader.exchange import BASE_TIMEFRAME
from sltrader_plugins import Signal

Side = Literal["buy", "sell"]

BUY_AT, SELL_AT = 0.54, 0.46  # the model's probability of an up move
CONFIRM_TIMEFRAMES = ("4h",)
TREND_CANDLES = 6  # a confirmation timeframe trends up if it closed above this mean
NOTIONAL = 1000.0  # per position, in the symbol's quote currency


@dataclass
class Position:
    side: Side
    quantity: float
    entry: float


class TradingService:
    """Runs on the main loop, after each scan; only the cache is shared with workers."""

    def __init__(self, cache: IntelligentCache) -> None:
        self.cache = cache
        self.positions: dict[str, Position] = {}
        self.prices: dict[str, float] = {}  # the last close seen, by symbol
        self.realized = 0.0
        self.orders = 0

    def confirmed_signals(self, predictions: Sequence[Prediction], now: float) -> list[Signal]:
        """A buy (sell) where the probability is high (low) enough and every confirmation
        timeframe trends that way."""
        signals = []
        for p in predictions:
            self.prices[p.symbol] = p.close
            side: Side | None = (
                "buy" if p.probability >= BUY_AT else "sell" if p.probability <= SELL_AT else None
            )
            if side is not None and all(
                self._trends(p.symbol, tf, side) for tf in CONFIRM_TIMEFRAMES
            ):
                signals.append(Signal(p.symbol, BASE_TIMEFRAME, side, p.probability, now))
        return signals

    def _trends(self, symbol: str, timeframe: str, side: Side) -> bool:
        # Through the cache like every read: a 4h series stays fresh for four cycles.
        closes = self.cache.get_klines(symbol, timeframe).close[-TREND_CANDLES:]
        up = bool(closes[-1] > closes.mean())
        return up if side == "buy" else not up

    def place_order(self, signal: Signal) -> None:
        """A paper order: open a position when flat; an opposite signal closes it."""
        price = self.prices[signal.symbol]
        position = self.positions.get(signal.symbol)
        if position is None:
            self.positions[signal.symbol] = Position(signal.side, NOTIONAL / price, price)
        elif position.side != signal.side:
            del self.positions[signal.symbol]
            self.realized += self._pnl(position, price)
        else:
            return  # already positioned that way
        self.orders += 1

    def pnl(self) -> float:
        """Realized plus open positions marked to the last close."""
        open_pnl = sum(self._pnl(p, self.prices[s]) for s, p in self.positions.items())
        return self.realized + open_pnl

    @staticmethod
    def _pnl(position: Position, price: float) -> float:
        direction = 1.0 if position.side == "buy" else -1.0
        return direction * position.quantity * (price - position.entry)
