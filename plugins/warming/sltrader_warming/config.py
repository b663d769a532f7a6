"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

import attrs

from sltrader_plugins import finite, integer, timeframe_list

#: A key's access score stops here (the sketch's 8-bit counters).
MAX_SCORE = 255


@attrs.frozen
class WarmingConfig:
    """What the warmer does, validated; defaults come from ``sltrader bench`` (docs/warming.md).

    :ivar warm_threshold: the least access score a key needs to be refreshed; one scan read
        scores ``scan_weight``, a signal ``signal_weight`` (a score stops at 255).
    :ivar cooldown_s: a key is refreshed at most once per this many seconds (clock time).
    :ivar top_k: at most this many keys are refreshed per candle close, hottest first.
    :ivar higher_timeframes: the timeframes warmed when a symbol signals; unset means the
        host's ``confirm_timeframes``.
    :ivar request_budget: the most exchange requests the warmer makes per scan cycle.
    :ivar max_parallel: prefetches run at once (threads, only while prefetches run).
    :ivar scan_weight: the score a scan read adds to its key.
    :ivar signal_weight: the score a signal adds to the symbol's keys.
    :ivar recency_candles: a key not read for this many candles of its timeframe is not
        refreshed (a symbol that left the universe stops costing requests).
    :ivar max_tracked: the most keys the tracker remembers; bounds its memory.
    :ivar warm_new_symbols: just before a scan, fetch the scanned symbols the cache does
        not hold (new in the universe); the scan would fetch them anyway.
    :ivar probe_higher_timeframes: at a higher timeframe's close, also refresh the cached
        series of that timeframe for the scanned symbols (read by candidate checks the
        warmer is not told about).
    :ivar follow_confirmations: when the trader fetches one of a symbol's
        ``higher_timeframes`` series (a candidate being confirmed), prefetch its others at
        once, beside it: the trader reads them next.
    :ivar step_aside: measure while it runs whether its work pays on this trader, and
        step aside while it does not (docs/plugins.md, "Pays or steps aside"); false:
        always work.
    """

    warm_threshold: float = attrs.field(
        default=2.0, validator=finite(min=0, max=MAX_SCORE, why="a score stops at 255")
    )
    cooldown_s: float = attrs.field(default=30.0, validator=finite(min=0))
    top_k: int = attrs.field(default=512, validator=integer(min=1))
    higher_timeframes: tuple[str, ...] | None = attrs.field(
        default=None, validator=timeframe_list(optional=True)
    )
    request_budget: int = attrs.field(default=600, validator=integer(min=0))
    max_parallel: int = attrs.field(default=32, validator=integer(min=1, max=256))
    scan_weight: int = attrs.field(default=1, validator=integer(min=1, max=15))
    signal_weight: int = attrs.field(default=4, validator=integer(min=1, max=15))
    recency_candles: float = attrs.field(default=1.0, validator=finite(min=0))
    max_tracked: int = attrs.field(default=4096, validator=integer(min=16, max=1 << 20))
    warm_new_symbols: bool = True
    probe_higher_timeframes: bool = True
    follow_confirmations: bool = True
    step_aside: bool = True
