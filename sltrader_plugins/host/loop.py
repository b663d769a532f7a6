"""The main loop: a synchronous cycle of clock, candle closes, scan, signals, learning.

Per cycle: advance the simulated clock by the scan interval; tell plugins about every
candle close passed since the last scan (``on_candle_close``, idle time, not timed);
rotate the universe; ``before_scan`` and ``analyze_all_symbols`` (timed together: the
scan wall time); ``on_scan_complete``; signals, paper orders and the model update. After a
base candle close, the time from the scan's start to the last order for that close (or the
end of its decisions) is the decision latency. Plugins start (``on_start``) before any
worker runs and stop (``on_shutdown``) in ``finally``.
"""

from __future__ import annotations

import gc
import logging
import math
import resource
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import attrs
import numpy as np

from sltrader_plugins.cache import SingleFlightCache
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.host.analyzer import Analysis, ParallelAnalyzer, Samples, SkipLog
from sltrader_plugins.host.exchange import ExchangeError, ReplayExchange, SimClock
from sltrader_plugins.host.features import FeatureEngine
from sltrader_plugins.host.figures import RunReport
from sltrader_plugins.host.trading import TradingConfig, TradingService
from sltrader_plugins.host.workload import CLOCK_START, Workload
from sltrader_plugins.manager import PluginManager
from sltrader_plugins.model import ModelAdapter

log = logging.getLogger(__name__)

#: A day boundary (2023-11-15 00:00 UTC); the clock starts 5 s later (``CLOCK_START``).
START = CLOCK_START - 5.0
#: How long each plugin's on_shutdown may take after Ctrl-C (seconds).
INTERRUPTED_SHUTDOWN_S = 0.5


class CtrlC:
    """While the cycles run: the first Ctrl-C asks the run to end after the cycle in
    progress, a second one interrupts it at once (``KeyboardInterrupt``).

    A ``KeyboardInterrupt`` raised at an arbitrary bytecode of the main thread can land
    inside a plugin's hook, a cache flight or a lock's ``with``; ending between cycles
    leaves nothing half done. Installed only from the main thread and only over Python's
    own handler: an application's handler stays in charge.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class Host:
    """The reference trader, wired from a workload and a plugin manager."""

    def __init__(
        self,
        workload: Workload,
        manager: PluginManager,
        predictions: IO[str] | None = None,
        exchange: Any = None,
        wrap_exchange: Callable[[Any], Any] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """:param exchange: the exchange (default: the replay exchange of ``workload``).
        :param wrap_exchange: applied to the exchange (a test's faulty one, say).
        :param timer: the wall clock of scan times and decision latencies (a test's own).
        """
        from sltrader_plugins.host.model import make_model  # imports sklearn

        self.workload = w = workload
        self.manager = manager
        self.plugins = Plugins(manager)
        self._predictions = predictions
        self.timer = timer
        # Start a few seconds after a candle close so the first scan is mid-candle.
        self.clock = SimClock(CLOCK_START)
        # The workload's market and latency profile (``wan``'s tail included), as a served
        # exchange of the same workload has them.
        self.market = w.market()
        self.exchange = exchange or ReplayExchange(
            self.market,
            w.symbol_names(),
            self.clock,
            rate_limit_per_min=w.rate_limit_per_min,
            latency=w.latency_profile(),
        )
        if wrap_exchange is not None:
            self.exchange = wrap_exchange(self.exchange)
        limits = {w.base_timeframe: w.candles}
        limits.update({tf: w.confirm_candles for tf in w.confirm_timeframes})
        self.cache = SingleFlightCache(
            # Plugins may serve a series, pace the request and publish the answer.
            self.plugins.fetching(self.exchange.fetch_klines),
            self.clock,
            w.cache_capacity,
            w.base_timeframe,
            limits,
            fetch_timeout_s=w.fetch_timeout_s,
        )
        self.learner = make_model(w.model, w.seed)
        self.model = ModelAdapter(self.learner)
        self.engine = FeatureEngine(self.plugins, min_candles=w.min_candles)
        self.skips = SkipLog()
        self.symbols: list[str] = []  # the last universe the exchange gave
        self.predict_waits = Samples(max(1000, w.cycles * w.universe), seed=w.seed)
        self.scan_times = np.zeros(0)
        # Whether a scan finds its series stale or missing: the first scan, and each one
        # after a base candle close. Only those have misses for a warmer to remove.
        self.stale_scans = np.zeros(0, dtype=bool)
        # Per cycle after a base candle close (the first excluded): from the scan's start
        # to the trader's last order for that close, or the end of its decisions (NaN in
        # the other cycles).
        self.decision_latencies = np.zeros(0)
        self.cycles_done = 0
        self.interrupted = False
        self.run_seconds = 0.0
        self.analyzer: ParallelAnalyzer | None = None
        self.trading: TradingService | None = None
        self.gc_gen0 = 0
        self.last_results: list[Analysis] = []

    def run(
        self,
        cycles: int | None = None,
        progress: Callable[[int, int, float], None] | None = None,
        allocations: bool = False,
        on_started: Callable[[], None] | None = None,
    ) -> RunReport:
        """Trade ``cycles`` cycles (default: the workload's) and return the report.

        :param progress: called after each cycle with the cycles done, all cycles and
            the last scan's seconds.
        :param allocations: also measure allocation and uncontended CPU time per
            feature build, after the last scan (slow, untimed, with the plugins still
            running).
        :param on_started: called once the plugins have started, before the first cycle
            (traders run together start their first cycles together from there).
        """
        w = self.workload
        cycles = w.cycles if cycles is None else cycles
        if cycles > w.cycles:
            raise ValueError(f"the replay is generated for {w.cycles} cycles, not {cycles}")
        self.scan_times = np.zeros(cycles)
        self.stale_scans = np.zeros(cycles, dtype=bool)
        self.decision_latencies = np.full(cycles, np.nan)
        if cycles:
            self.stale_scans[0] = True  # nothing is cached yet
        started = time.perf_counter()
        try:
            # Inside the try: if one plugin refuses its configuration, those already
            # started still get on_shutdown.
            self.plugins.start(
                model=self.model,
                cache=self.cache,
                clock=self.clock,
                base_timeframe=w.base_timeframe,
                workers=w.workers,
                confirm_timeframes=w.confirm_timeframes,
            )
            with ThreadPoolExecutor(w.workers, thread_name_prefix="sltrader-worker") as pool:
                analyzer = ParallelAnalyzer(
                    self.cache,
                    self.engine,
                    self.plugins,
                    pool,
                    w.base_timeframe,
                    self.predict_waits,
                    self.skips,
                )
                trading = TradingService(
                    self.cache,
                    self.learner,
                    self.plugins,
                    pool,
                    self.clock,
                    w.base_timeframe,
                    TradingConfig(
                        buy_threshold=w.buy_threshold,
                        sell_threshold=w.sell_threshold,
                        confirm_timeframes=w.confirm_timeframes,
                        hold_candles=w.hold_candles,
                        max_positions=w.max_positions,
                    ),
                    self.skips,
                    timer=self.timer,
                )
                self.analyzer, self.trading = analyzer, trading
                if on_started is not None:
                    on_started()
                try:
                    with CtrlC() as ctrl_c:
                        for cycle in range(cycles):
                            self._cycle(cycle, analyzer, trading)
                            if progress is not None:
                                progress(cycle + 1, cycles, float(self.scan_times[cycle]))
                            if ctrl_c.requested:
                                self.interrupted = True
                                break
                except KeyboardInterrupt:
                    # A second Ctrl-C (or one raised by a hook): symbols a worker holds
                    # finish, the queued ones are dropped, the report covers the cycles done.
                    self.interrupted = True
                    pool.shutdown(wait=False, cancel_futures=True)
            self.run_seconds = time.perf_counter() - started
            report = self.report()
            if allocations and not self.interrupted:
                report = attrs.evolve(report, **self.measure_allocations())
            return report
        finally:
            # After Ctrl-C a plugin gets a short bound to stop: the user is waiting.
            self.plugins.close(bound=INTERRUPTED_SHUTDOWN_S if self.interrupted else None)

    def _cycle(self, cycle: int, analyzer: ParallelAnalyzer, trading: TradingService) -> None:
        w = self.workload
        now = self.clock.advance(w.scan_interval_s)
        closes = self.plugins.candle_closes(next_scan_time=now)
        if any(timeframe == w.base_timeframe for timeframe, _ in closes):
            self.stale_scans[cycle] = True
        symbols = self._universe()
        gen0 = gc.get_stats()[0]["collections"]
        # The scan's own hook is timed with it: work a plugin does there delays the scan.
        start = self.timer()
        with self.plugins.scan(symbols, w.base_timeframe):
            results = analyzer.analyze_all_symbols(symbols)
            self.scan_times[cycle] = self.timer() - start
        self.gc_gen0 += gc.get_stats()[0]["collections"] - gen0
        analyses = [r for r in results if isinstance(r, Analysis)]
        if self._predictions is not None:
            self._predictions.writelines(
                f"{cycle}\t{a.symbol}\t{a.prediction!r}\n" for a in analyses
            )
        trading.process(analyses)
        # The first scan after a base close decides on that candle for every symbol; the
        # first scan of the run is a cold start, reported apart (scan_cold_s).
        if cycle > 0 and self.stale_scans[cycle]:
            self.decision_latencies[cycle] = trading.decided_at - start
        self.last_results = analyses
        self.cycles_done = cycle + 1

    def _universe(self) -> list[str]:
        """The symbols to scan: the exchange's top ones now, or the last scan's when the
        exchange fails (skipped with its reason: the loop goes on)."""
        try:
            with self.plugins.exchange_request():
                self.symbols = self.exchange.top_symbols(self.workload.universe)
        except ExchangeError as exc:
            self.skips.record("universe", "top symbols", str(exc))
        return self.symbols

    # -- the report -----------------------------------------------------------------

    def report(self) -> RunReport:
        """What the run measured and decided so far (all zero before ``run``)."""
        stats = self.cache.stats()
        model = self.model.times()
        builds, build_seconds = (0, 0.0)
        if self.analyzer is not None:
            builds, build_seconds = self.analyzer.build_counters()
        trading = self.trading
        scans = self.scan_times[: self.cycles_done]
        stale = self.stale_scans[: self.cycles_done]
        # The first scan is cold (nothing cached): apart from both kinds.
        post_close = stale.copy()
        post_close[:1] = False
        fresh = ~stale
        latencies = self.decision_latencies[: self.cycles_done]
        latencies = latencies[~np.isnan(latencies)]
        confirm_misses = self.cache.miss_causes()["higher_timeframe"]
        confirm_reads = trading.confirm_reads if trading else 0
        per_build = max(1, builds)
        return RunReport(
            workload=self.workload,
            cycles=self.cycles_done,
            interrupted=self.interrupted,
            symbols_scanned=len(self.predict_waits),
            signals=trading.signals if trading else 0,
            orders=trading.orders if trading else 0,
            open_positions=len(trading.positions) if trading else 0,
            pnl_realized=trading.realized if trading else 0.0,
            pnl_unrealized=trading.unrealized() if trading else 0.0,
            trained_samples=trading.trained if trading else 0,
            decisions_digest=trading.digest() if trading else "",
            cache_hit_rate=stats.hit_rate,
            confirm_reads=confirm_reads,
            confirm_hit_rate=(
                (confirm_reads - confirm_misses) / confirm_reads if confirm_reads else 0.0
            ),
            cache_hits=stats.demand_hits,
            cache_misses=stats.demand_misses,
            cache_evictions=stats.evictions,
            miss_causes=self.cache.miss_causes(),
            higher_timeframe_miss_causes=self.cache.higher_timeframe_causes(),
            cache=self.cache.extra_stats(),
            prefetches=stats.prefetches,
            prefetches_used=stats.prefetches_used,
            prefetches_wasted=stats.prefetches_wasted,
            prefetch_waste_ratio=(
                stats.prefetches_wasted / stats.prefetches if stats.prefetches else 0.0
            ),
            exchange_requests=self.exchange.requests,
            model=model,
            model_s_per_prediction=model.seconds_per_prediction,
            predict_wait_p50_s=self.predict_waits.percentile(50),
            predict_wait_p99_s=self.predict_waits.percentile(99),
            scan_wall_s=_mean(scans),
            scan_cold_s=float(scans[0]) if len(scans) else 0.0,
            scan_stale_s=_mean(scans[post_close]),
            scan_fresh_s=_mean(scans[fresh]),
            stale_scans=int(post_close.sum()),
            decision_latency_p50_s=_percentile(latencies, 50),
            decision_latency_p99_s=_percentile(latencies, 99),
            decision_latency_s=latencies.tolist(),
            scan_p50_s=_percentile(scans, 50),
            scan_p99_s=_percentile(scans, 99),
            scan_times_s=scans.tolist(),
            stale=stale.tolist(),
            feature_build_s=build_seconds / per_build,
            feature_builds=builds,
            gc_gen0_per_1000_builds=1000.0 * self.gc_gen0 / per_build,
            skipped=self.skips.counts(),
            active_plugins=self.plugins.active(),
            plugin_metrics=self.plugins.metrics(),
            plugin_summaries=self.plugins.summaries(),
            plugin_faults=self.plugins.faults(),
            run_seconds=self.run_seconds,
            rss_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )

    def measure_allocations(self, sample: int = 16, timings: int = 25) -> dict[str, float]:
        """Gross allocation and uncontended CPU time per feature build, on the last scan's
        series (main thread, workers idle, so nothing else allocates or competes for the
        GIL meanwhile); ``run(allocations=True)`` calls it before the plugins shut down.

        The scan's ``feature_build_s`` is measured under the workers' contention, where a
        build's CPU time grows with what the other threads run; this one is the build's
        own cost: the fastest of ``timings`` untraced passes over the sample (left out
        when tracemalloc was already on, as it would be traced).
        """
        import tracemalloc

        from sltrader_plugins.host.allocations import measure

        chosen = sorted(self.last_results, key=lambda a: a.symbol)[:sample]
        if not chosen:
            return {}
        timeframe = self.workload.base_timeframe

        def build_all() -> None:
            for a in chosen:
                self.engine.build(a.symbol, timeframe, a.klines)

        build_all()  # warm: pools fill, layouts are built
        allocation = measure(build_all, repeat=2)
        report = {
            "feature_alloc_bytes_per_build": allocation.bytes / len(chosen),
            "feature_alloc_blocks_per_build": allocation.blocks / len(chosen),
            "feature_alloc_peak_bytes": allocation.peak,
        }
        if not tracemalloc.is_tracing():
            fastest = math.inf
            for _ in range(timings):
                start = time.thread_time()
                build_all()
                fastest = min(fastest, time.thread_time() - start)
            report["feature_build_uncontended_s"] = fastest / len(chosen)
        return report


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0
