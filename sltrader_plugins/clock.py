"""``WallClock``: the :class:`~sltrader_plugins.Clock` of a live trader."""

from __future__ import annotations

import time


class WallClock:
    """Now is the system's wall time (epoch seconds), as candle boundaries are."""

    def now(self) -> float:
        return time.time()
