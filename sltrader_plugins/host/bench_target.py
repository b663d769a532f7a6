"""The reference trader as ``sltrader bench --trader`` runs any trader::

    sltrader bench --trader sltrader_plugins.host.bench_target:cycles --workers 1,4,8,16

:func:`cycles` is what ``sltrader run`` runs (the host's :class:`~.loop.Host`: its loop,
replay exchange and model, through the same call sites), with the plugins
``Plugins.load()`` chooses, so the bench's ``SLTRADER_PLUGINS`` picks the set. The
workload is ``sltrader run``'s: the ``[host]`` section (``sltrader.toml``, or
``SLTRADER__HOST__...`` variables such as ``SLTRADER__HOST__SIZE=small``) over the
``full`` preset, with ``count`` cycles and ``workers`` threads.

The model library (scikit-learn) is imported with this module, before the bench's clock
starts: what a run times is the trader's wiring (the market generated, the plugins
started) and its cycles. A signal or order needs a closed candle to decide on: the
base timeframe closes every 8 cycles, so a run of fewer than about 17 cycles decides
nothing and its decisions are an empty list.
"""

from __future__ import annotations

from typing import Any

import sltrader_plugins.host.model  # noqa: F401 - imported here, outside the timed run
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.host.loop import Host
from sltrader_plugins.host.trading import MAX_KEPT_DECISIONS
from sltrader_plugins.host.workload import workload_from

#: The preset when the ``[host]`` section names none: ``sltrader run``'s.
DEFAULT_SIZE = "full"


def cycles(count: int, workers: int = 4) -> list[list[Any]]:
    """Run ``count`` scan cycles of the reference trader on ``workers`` threads.

    :return: its signals and orders in the order it made them (an order that
        depends on neither thread timing nor the number of workers), each a list:
        ``["signal", time, symbol, side, probability]`` and
        ``["order", time, symbol, side, quantity, price]``, floats rounded to 6 decimals
        as the run's decisions digest reads them.
    :raises ConfigError: a wrong ``[host]`` value, ``count`` or ``workers``.
    """
    plugins = Plugins.load()  # entry points, SLTRADER_PLUGINS, sltrader.toml
    size = plugins.config.host.get("size") or DEFAULT_SIZE
    workload = workload_from(size, plugins.config.host, workers=workers, cycles=count)
    host = Host(workload, plugins.manager)
    host.run()
    trading = host.trading
    assert trading is not None  # run() made it
    if trading.decisions_made > len(trading.decisions):
        raise ValueError(
            f"{trading.decisions_made} decisions: more than the {MAX_KEPT_DECISIONS} a run "
            "keeps to compare; bench fewer cycles"
        )
    return [
        [float(round(field, 6)) if isinstance(field, float) else field for field in decision]
        for decision in trading.decisions
    ]
