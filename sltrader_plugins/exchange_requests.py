"""What the exchange hooks are given: one object per kline fetch and per request.

The trader's call site (``Plugins.fetching``, ``Plugins.exchange_request``) makes one of
each per call and hands the same object to every hook of that call, so a plugin matches a
``before_`` to its ``after_`` by identity (a dict keyed by the object), never by thread.
"""

from __future__ import annotations

import attrs


@attrs.frozen(eq=False)
class KlineFetch:
    """One fetch of a kline series, as the trader asks the exchange for it.

    Compared and hashed by identity: two fetches of the same series are two fetches.

    :ivar symbol: the series' symbol.
    :ivar timeframe: the series' timeframe.
    :ivar limit: the most candles asked for (the exchange's ``limit``).
    :ivar close_time: the close of the newest candle closed by the trader's clock when
        the fetch began (epoch seconds, a candle boundary): the series is fresh if its
        newest candle closes there.
    """

    symbol: str
    timeframe: str
    limit: int
    close_time: float


@attrs.frozen(eq=False)
class ExchangeRequest:
    """One request to the exchange. Compared and hashed by identity.

    :ivar weight: its cost in the exchange's rate-limit units (1 for most).
    :ivar fetch: the kline fetch it is for, ``None`` for the trader's other requests.
    """

    weight: int = 1
    fetch: KlineFetch | None = None
