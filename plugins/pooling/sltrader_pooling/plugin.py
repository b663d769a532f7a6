"""The buffer-pooling plugin's hook implementations."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sltrader_plugins import FeatureBuffers, HostServices, PluginSettings, hookimpl, nonblocking
from sltrader_plugins.payoff import Payoff
from sltrader_pooling.buffers import BufferPool
from sltrader_pooling.config import PoolingConfig

log = logging.getLogger(__name__)


class PoolingPlugin:
    """Serves the intermediate arrays of every feature build from one bounded pool.

    Instantiated once per host (a class entry point). Its settings are its
    ``[plugins.<name>]`` section, whatever name it is loaded under. Before ``on_start``
    it answers no build and the host allocates its own arrays.
    """

    def __init__(self) -> None:
        self.config: PoolingConfig | None = None
        self.pool: BufferPool | None = None
        # Whether pooling pays on this trader: while it does not, the host allocates.
        self.payoff: Payoff | None = None

    @hookimpl
    def on_start(self, services: HostServices, settings: PluginSettings) -> None:
        config = settings.parse(PoolingConfig)  # a ConfigError stops start-up
        idle_builds = config.max_idle_builds
        # No more builds run at once than there are workers, so more idle sets than
        # workers would never be taken; a main-loop build may add one.
        if idle_builds is None:
            idle_builds = services.workers + 1
        # Named after the plugin's own name: it is whose leaks a shutdown report lists.
        pool = BufferPool(config, idle_builds, name=settings.name)
        # on_start runs before any worker builds, so workers only ever read self.pool.
        self.payoff = Payoff(settings.name, log, trials=config.step_aside)
        old, self.config, self.pool = self.pool, config, pool
        if old is not None:
            old.shutdown(log)

    @hookimpl
    def on_feature_build(
        self, symbol: str, timeframe: str, n_candles: int
    ) -> FeatureBuffers | None:
        pool, payoff = self.pool, self.payoff
        if pool is None or payoff is None or not payoff.active:
            return None
        return pool.acquire(symbol, timeframe, n_candles)

    @hookimpl
    @nonblocking  # a lock held for microseconds
    def on_scan_complete(self) -> None:
        if self.payoff is not None:
            self.payoff.end_scan()

    @hookimpl
    def report_summary(self) -> str | None:
        pool = self.pool
        if pool is None:
            return None
        stats = pool.stats()
        arrays = stats.hits + stats.misses + stats.unpooled
        aside = self.payoff.counters().describe() if self.payoff is not None else ""
        return (
            f"{stats.hits} of {arrays} feature arrays from the pool, not allocated, "
            f"in {stats.builds} builds{aside}"
        )

    @hookimpl
    def report_metrics(self) -> Mapping[str, float] | None:
        pool = self.pool
        if pool is None:
            return None
        stats = pool.stats()
        requests = stats.hits + stats.misses
        # Unprefixed: the manager prefixes each name with the plugin's. What a user needs
        # first leads (the order is kept in reports): the share of arrays the pool
        # saved an allocation for, and how many.
        return {
            "hit_rate": stats.hits / requests if requests else 0.0,
            "hits": float(stats.hits),
            "misses": float(stats.misses),
            "unpooled": float(stats.unpooled),
            "builds": float(stats.builds),
            "outstanding": float(stats.outstanding),
            "idle_builds": float(stats.idle_builds),
            "idle_bytes": float(stats.idle_bytes),
            "max_idle_bytes": float(pool.config.max_idle_bytes),
            "buffer_sets_created": float(stats.created),
            "dropped_bytes": float(stats.dropped_bytes),
            **(self.payoff.metrics() if self.payoff is not None else {}),
        }

    @hookimpl
    def on_shutdown(self) -> None:
        if self.payoff is not None:
            self.payoff.close()
        pool = self.pool
        if pool is not None:
            leaked = pool.shutdown(log)
            if not leaked:
                log.debug("every build released its buffers")
