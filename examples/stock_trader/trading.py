"""The strategy around the model: candidates, their weekly confirmation, paper orders.

A symbol whose P(up) is at least ``BUY_AT`` is a buy candidate, at most ``SELL_AT`` a
sell candidate. A candidate is confirmed when its weekly candles trend its way: the last
closed week's close above (buy) or below (sell) the mean of the last ``CONFIRM_WEEKS``
weekly closes. A confirmed signal is a paper order when it opens a position (flat) or
closes one (opposite side); a signal the way the position already is places nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from examples.stock_trader.exchange import DAILY, WEEKLY

Side = Literal["buy", "sell"]

BUY_AT, SELL_AT = 0.72, 0.28
CONFIRM_WEEKS = 5  # the history holds 6 closed weeks when the replay starts
#: Candles fetched: every day a window has (so the indicators see the whole series, as
#: in training), and more weeks than the confirmation reads.
LIMITS = {DAILY: 100, WEEKLY: 20}
NOTIONAL = 10_000.0  # per position, in dollars


@dataclass(frozen=True, order=True)
class Analysis:
    """What a worker found for one symbol; ordered by symbol first."""

    symbol: str
    close: float  # of the newest closed day, the one the prediction is made on
    probability: float  # P(the next day closes higher)
    side: Side | None  # a candidate's side
    confirmed: bool  # by the weekly candles


def candidate_side(probability: float) -> Side | None:
    if probability >= BUY_AT:
        return "buy"
    return "sell" if probability <= SELL_AT else None


def confirms(weekly: pd.DataFrame, side: Side) -> bool:
    """Whether the closed weeks trend ``side``'s way."""
    closes = weekly["close"].iloc[-CONFIRM_WEEKS:]
    if len(closes) < CONFIRM_WEEKS:
        return False
    above = bool(closes.iat[-1] > closes.mean())
    return above if side == "buy" else not above


@dataclass
class PaperBook:
    """Paper positions and the run's decisions; used on the main thread only."""

    positions: dict[str, tuple[Side, float]] = field(default_factory=dict)  # side, quantity
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def trade(self, analysis: Analysis, now: float) -> None:
        """Record a confirmed signal, and its order if it places one."""
        symbol, side, price = analysis.symbol, analysis.side, analysis.close
        assert side is not None and analysis.confirmed
        at = {"time": int(now), "symbol": symbol, "side": side}
        self.decisions.append(
            {"kind": "signal", **at, "probability": round(analysis.probability, 6)}
        )
        held = self.positions.get(symbol)
        if held is None:
            quantity = NOTIONAL / price
            self.positions[symbol] = (side, quantity)
        elif held[0] != side:
            quantity = held[1]
            del self.positions[symbol]
        else:
            return
        self.decisions.append(
            {"kind": "order", **at, "price": round(price, 6), "quantity": round(quantity, 6)}
        )


@dataclass
class Run:
    """What a run of the trader gives back."""

    decisions: list[dict[str, Any]]  # signals and orders, in a deterministic order
    scans: list[list[Analysis]]  # every scan's analyses, by symbol
    summary: dict[str, Any]  # the run's counters, for people
