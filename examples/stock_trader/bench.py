"""bot.py as ``sltrader bench`` runs it, from the repository's root::

    sltrader bench --trader examples.stock_trader.bench:cycles --cycles 10 --workers 1,4,16

The bench chooses each plugin set through ``SLTRADER_PLUGINS``, which ``Plugins.load()``
in bot.py reads. The decisions are the run's signals and paper orders.
"""

from __future__ import annotations

from typing import Any

from examples.stock_trader import bot


def cycles(count: int, workers: int = 4) -> list[dict[str, Any]]:
    """Replay ``count`` days of bot.py on ``workers`` threads; its decisions."""
    return bot.run(count, workers).decisions
