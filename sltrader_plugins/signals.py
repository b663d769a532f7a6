"""The trading signal the host emits."""

from __future__ import annotations

from typing import Literal

import attrs

Side = Literal["buy", "sell"]


def _lower(side: object) -> object:
    return side.lower() if isinstance(side, str) else side


@attrs.frozen
class Signal:
    """A confirmed trading signal for one symbol.

    :ivar symbol: the exchange symbol, e.g. ``"BTC_USDT"`` (never split it: ``_``, ``/``
        and ``-`` are legal inside symbols).
    :ivar timeframe: the timeframe the signal was scanned on.
    :ivar side: ``"buy"`` or ``"sell"`` (an exchange's ``"BUY"``/``"SELL"`` is lowered).
    :ivar probability: the model's probability of an up move that produced the signal.
    :ivar time: the clock's now when the signal was emitted (epoch seconds).
    """

    symbol: str
    timeframe: str
    side: Side = attrs.field(converter=_lower, validator=attrs.validators.in_(("buy", "sell")))
    probability: float
    time: float
