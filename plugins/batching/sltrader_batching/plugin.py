"""The micro-batching plugin's hook implementations: thin glue around :class:`MicroBatcher`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sltrader_batching.batcher import MicroBatcher
from sltrader_batching.config import BatchingConfig
from sltrader_plugins import HostServices, Model, PluginSettings, hookimpl, nonblocking
from sltrader_plugins.payoff import Payoff

log = logging.getLogger("sltrader_batching")


class BatchingPlugin:
    """Micro-batches the worker threads' ``model.predict`` calls into ``predict_batch``.

    One instance per host (the entry point names the class). Its settings are its
    ``[plugins.<name>]`` section, whatever name it is loaded under. Before ``on_start``
    and after ``on_shutdown`` every hook is a no-op and predictions pass through.
    """

    def __init__(self) -> None:
        self._batcher: MicroBatcher | None = None
        self.config: BatchingConfig | None = None
        # Whether batching pays on this trader: while it does not, every prediction is
        # handed back to the host at once.
        self.payoff: Payoff | None = None

    @property
    def batcher(self) -> MicroBatcher | None:
        return self._batcher

    @hookimpl
    def on_start(self, services: HostServices, settings: PluginSettings) -> None:
        config = settings.parse(BatchingConfig)  # a ConfigError stops start-up
        batcher = MicroBatcher(config, workers=services.workers)
        batcher.check_model(services.model)  # the one log line for an unbatchable model
        self.config = config
        self.payoff = Payoff(settings.name, log, trials=config.step_aside)
        self._batcher = batcher

    @hookimpl
    @nonblocking  # a lock held for microseconds
    def before_scan(self, symbols: Sequence[str]) -> None:
        batcher = self._batcher
        if batcher is not None:
            batcher.begin_scan(len(symbols))

    @hookimpl
    def before_analyze_symbol(self) -> None:
        batcher = self._batcher
        if batcher is not None:
            batcher.enter()

    @hookimpl
    def after_analyze_symbol(self) -> None:
        batcher = self._batcher
        if batcher is not None:
            batcher.leave()

    @hookimpl
    def before_exchange_request(self) -> None:
        # The worker waits on the exchange (pacing included) for milliseconds: batches
        # must not wait for it.
        batcher = self._batcher
        if batcher is not None:
            batcher.away()

    @hookimpl
    def after_exchange_request(self) -> None:
        # Its request returned: it builds its features and predicts next.
        batcher = self._batcher
        if batcher is not None:
            batcher.back()

    @hookimpl
    def before_predict(self, features: np.ndarray, model: Model) -> float | None:
        # None hands the call back to the host: its own model.predict, its own error
        # handling. We never raise a model's exception out of this hook, because the
        # manager's fault guard would swallow it, blame this plugin and predict again.
        batcher, payoff = self._batcher, self.payoff
        if batcher is None or payoff is None or not payoff.active:
            return None
        return batcher.submit(model, features)

    @hookimpl
    @nonblocking  # a lock held for microseconds
    def on_scan_complete(self) -> None:
        batcher = self._batcher
        if batcher is not None:
            batcher.flush()
        if self.payoff is not None:
            self.payoff.end_scan()

    @hookimpl
    def on_shutdown(self) -> None:
        if self.payoff is not None:
            self.payoff.close()
        batcher = self._batcher
        if batcher is None:
            return
        if not batcher.close():
            log.warning(
                "a model call had not returned at shutdown; the callers waiting for it "
                "predict by themselves once they stop waiting"
            )

    @hookimpl
    def report_summary(self) -> str | None:
        batcher = self._batcher
        if batcher is None:
            return None
        m = batcher.metrics()
        aside = self.payoff.counters().describe() if self.payoff is not None else ""
        return (
            f"{m['batched_requests']:.0f} of {m['requests']:.0f} predictions batched, "
            f"{m['mean_batch_size']:.1f} per model call, wait p50 {m['wait_p50_ms']:.2f} ms"
            f"{aside}"
        )

    @hookimpl
    def report_metrics(self) -> dict[str, float] | None:
        batcher = self._batcher
        if batcher is None:
            return None
        metrics = batcher.metrics()  # unprefixed: the manager adds the name we were loaded under
        # What a user needs first: what batching saved (predictions per model call, the
        # calls it made for how many requests), what that cost (the added wait), and
        # how often the model was too cheap to wait for. The rest keeps its order.
        first = (
            "mean_batch_size",
            "batches",
            "batched_requests",
            "requests",
            "wait_p50_ms",
            "wait_p99_ms",
            "dispatch_cheap",
        )
        if self.payoff is not None:
            metrics.update(self.payoff.metrics())
        return {**{name: metrics[name] for name in first if name in metrics}, **metrics}
