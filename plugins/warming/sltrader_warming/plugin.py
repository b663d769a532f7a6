"""The cache-warming plugin's hook implementations.

The host instantiates :class:`WarmingPlugin` once (a class entry point) and drives it from
its main loop: scans and signals feed the access tracker, candle closes between scans
trigger refreshes, and a fetch of one confirmation series brings the symbol's others
along. Nothing runs on its own: no background loop, no asyncio. A hook's prefetches run on
daemon threads, and every hook returns within
:data:`sltrader_warming.warmer.PREFETCH_WAIT_S` however the cache behaves
(``before_fetch_klines`` does not wait for its prefetches at all).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sltrader_plugins import (
    HostServices,
    KlineFetch,
    PluginSettings,
    Signal,
    hookimpl,
    nonblocking,
    nonblocking_while,
)
from sltrader_plugins.payoff import Payoff
from sltrader_warming.config import WarmingConfig
from sltrader_warming.warmer import Warmer

log = logging.getLogger("sltrader_warming")


class WarmingPlugin:
    """Warms the host's kline cache from its own scan, signal and candle-close events.

    Its settings are its ``[plugins.<name>]`` section, whatever name it is loaded under.
    Before ``on_start`` every hook is a no-op.
    """

    def __init__(self) -> None:
        self.config: WarmingConfig | None = None
        self.warmer: Warmer | None = None
        # Whether its prefetches pay on this trader: while they do not, it only tracks
        # what the trader reads (so that it knows what to warm when they pay again).
        self.payoff: Payoff | None = None
        # Whether a candle closed since the last scan ended: only such a cycle can show
        # what prefetching saves (a trader may scan several times per candle).
        self._closed = False

    @hookimpl
    def on_start(self, services: HostServices, settings: PluginSettings) -> None:
        # ConfigError propagates: the manager re-raises it so a wrong setting stops start-up
        # with the key named, instead of silently running without warming.
        config = settings.parse(WarmingConfig)
        self.config = config
        higher = (
            config.higher_timeframes
            if config.higher_timeframes is not None
            else tuple(services.confirm_timeframes)
        )
        self.warmer = Warmer(config, services.cache, services.clock, higher, name=settings.name)
        self.payoff = Payoff(settings.name, log, trials=config.step_aside)

    def _warming(self) -> Warmer | None:
        """The warmer when it prefetches now (started, and paying on this trader)."""
        payoff = self.payoff
        return self.warmer if payoff is not None and payoff.active else None

    def _idle(self) -> bool:
        """Nothing to prefetch: not started, or stepped aside (then its main-loop hooks
        only keep count, in the main loop, without the hand-over to its thread)."""
        return self._warming() is None

    @hookimpl
    @nonblocking_while(_idle)
    def before_scan(self, symbols: Sequence[str], timeframe: str, now: float) -> None:
        warmer = self._warming()
        if warmer is not None:
            warmer.warm_universe(symbols, timeframe)

    @hookimpl
    @nonblocking  # bookkeeping under its locks
    def on_scan_complete(self, symbols: Sequence[str], timeframe: str, now: float) -> None:
        if self.warmer is not None and self.payoff is not None:
            self.warmer.record_scan(symbols, timeframe, now)
            closed, self._closed = self._closed, False
            self.payoff.end_scan(measured=closed)

    @hookimpl
    @nonblocking_while(_idle)
    def on_signal(self, signal: Signal) -> None:
        if self.warmer is not None:
            self.warmer.record_signal(signal.symbol, signal.timeframe, warm=bool(self._warming()))

    @hookimpl
    @nonblocking_while(_idle)
    def on_candle_close(self, timeframe: str, close_time: float, next_scan_time: float) -> None:
        self._closed = True
        warmer = self._warming()
        if warmer is not None:
            warmer.refresh(timeframe, close_time, next_scan_time)

    @hookimpl
    def before_fetch_klines(self, fetch: KlineFetch) -> None:
        # The warmer only learns that a candidate is read; it never serves.
        warmer = self._warming()
        if warmer is not None:
            warmer.follow(fetch.symbol, fetch.timeframe)

    @hookimpl
    def report_summary(self) -> str | None:
        if self.warmer is None:
            return None
        m = self.warmer.metrics()
        aside = self.payoff.counters().describe() if self.payoff is not None else ""
        if "prefetches_used" not in m:  # a cache that cannot say which were read
            return f"{m['prefetches']:.0f} prefetches{aside}"
        return (
            f"{m['prefetches_used']:.0f} of {m['prefetches']:.0f} prefetches read in time, "
            f"{m['prefetches_wasted']:.0f} wasted{aside}"
        )

    @hookimpl
    def report_metrics(self) -> Mapping[str, float] | None:
        if self.warmer is None:
            return None
        metrics = self.warmer.metrics()
        if self.payoff is not None:
            metrics.update(self.payoff.metrics())
        # What a user needs first: the prefetches the trader read in time (what warming
        # saved) out of those made, and those wasted. A cache that cannot say omits the
        # first and last; the rest keeps its order.
        first = ("prefetches_used", "prefetches", "prefetches_wasted", "refreshes")
        return {**{name: metrics[name] for name in first if name in metrics}, **metrics}

    @hookimpl
    def on_shutdown(self) -> None:
        if self.warmer is not None:
            self.warmer.close()
        if self.payoff is not None:
            self.payoff.close()
