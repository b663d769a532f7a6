"""``IntelligentCache``: the trader's kline cache.

It is ``sltrader_plugins.SingleFlightCache`` in front of the exchange, which is all the
requirement's cache asks for: a series is fresh until a newer candle of its timeframe
has closed, concurrent misses of one key make one request, and the entries are bounded.
It is also a ``sltrader_plugins.KlineCache`` (``prefetch``, ``latest_close_time``,
``stats``) as it stands, which is what lets a warming plugin fill it.
"""

from __future__ import annotations

from collections.abc import Callable

from examples.trader.exchange import BASE_TIMEFRAME, ReplayExchange
from sltrader_plugins import Klines, SingleFlightCache

#: Candles per series: the longest indicator lookback (20) with room to spare. The model
#: is trained on windows of this length too, so it sees what the scans will show it.
WINDOW = 100


class IntelligentCache(SingleFlightCache):
    def __init__(
        self,
        exchange: ReplayExchange,
        capacity: int = 64,
        fetch: Callable[[str, str, int], Klines] | None = None,
    ) -> None:
        super().__init__(
            fetch or exchange.fetch_klines,
            exchange.clock,
            capacity,
            base_timeframe=BASE_TIMEFRAME,
            default_limit=WINDOW,
        )
