"""What a run of the reference trader reports: one typed value, each figure defined once.

:class:`RunReport` is what ``Host.run`` returns. Each of its measured fields carries a
:class:`Figure` (label, unit, what it measures, how to print it, whether the bench
tabulates it and which way is better), and everything that shows figures reads them from
here: the run's report, the bench's table and JSON, the plot.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from sltrader_plugins.host.workload import Workload
from sltrader_plugins.model import ModelTimes


@attrs.frozen
class Figure:
    """How one measured number is named, printed and compared.

    :ivar label: a short name for tables and plots.
    :ivar unit: ``"s"``, ``"bytes"``, ``"count"``, ``"ratio"``...
    :ivar description: what it measures, in one sentence.
    :ivar fmt: the format spec for one value.
    :ivar table: a row of the bench's table.
    :ivar better: which way an improvement goes (``None``: neither, e.g. a count).
    """

    label: str
    unit: str
    description: str
    fmt: str = ".4g"
    table: bool = False
    better: Literal["lower", "higher"] | None = None


def figure(
    label: str,
    unit: str,
    description: str,
    fmt: str = ".4g",
    *,
    table: bool = False,
    better: Literal["lower", "higher"] | None = None,
    default: Any = attrs.NOTHING,
) -> Any:
    """An attrs field of :class:`RunReport` that is a measured figure."""
    meta = Figure(label, unit, description, fmt, table, better)
    return attrs.field(default=default, metadata={"figure": meta})


@attrs.frozen(kw_only=True)
class RunReport:
    """Everything one run of the reference trader measured and decided."""

    workload: Workload
    cycles: int = figure("cycles", "count", "scan cycles completed")
    interrupted: bool = attrs.field(default=False)  #: ended by Ctrl-C
    symbols_scanned: int = figure("symbols scanned", "count", "symbols with a prediction")
    signals: int = figure("signals", "count", "confirmed signals emitted", ".0f")
    orders: int = figure("orders", "count", "paper orders placed", ".0f")
    open_positions: int = figure("open positions", "count", "positions open at the end")
    pnl_realized: float = figure("realized PnL", "quote", "closed positions' profit", "+.2f")
    pnl_unrealized: float = figure("unrealized PnL", "quote", "open positions marked", "+.2f")
    trained_samples: int = figure("trained samples", "count", "outcomes learned from")
    scan_wall_s: float = figure(
        "scan wall time (s/scan)",
        "s",
        "mean wall time of a scan: before_scan and analyze_all_symbols",
        ".4f",
        table=True,
        better="lower",
    )
    scan_cold_s: float = figure(
        "  of the first, cold (s)",
        "s",
        "scan wall time of the first scan, when nothing is cached (apart from the others)",
        ".4f",
        table=True,
        better="lower",
    )
    scan_stale_s: float = figure(
        "  after a candle close (s)",
        "s",
        "mean scan wall time of the scans after a base candle close, whose series went "
        "stale (the first scan excluded)",
        ".4f",
        table=True,
        better="lower",
    )
    scan_fresh_s: float = figure(
        "  of fresh series (s)",
        "s",
        "mean scan wall time of the other scans (neither the first nor after a base close)",
        ".4f",
        table=True,
        better="lower",
    )
    stale_scans: int = figure(
        "scans after a close", "count", "scans after a base candle close (the first excluded)"
    )
    decision_latency_p50_s: float = figure(
        "decision latency p50 (s)",
        "s",
        "per base candle close, from the start of the first scan after it to the last paper "
        "order placed for that close, or to the end of its decisions when it led to no "
        "order (candidates' confirmation reads included); median over the closes, the "
        "first scan (a cold start) excluded",
        ".4f",
        table=True,
        better="lower",
    )
    decision_latency_p99_s: float = figure(
        "decision latency p99 (s)",
        "s",
        "99th percentile of the decision latency over the run's base candle closes",
        ".4f",
        table=True,
        better="lower",
    )
    scan_p50_s: float = figure("scan p50 (s)", "s", "median scan wall time", ".4f")
    scan_p99_s: float = figure(
        "scan p99 (s)", "s", "99th percentile of scan wall time", ".4f", table=True, better="lower"
    )
    model_s_per_prediction: float = figure(
        "model time / prediction (s)",
        "s",
        "seconds inside predict/predict_batch divided by predictions",
        ".2e",
        table=True,
        better="lower",
    )
    predict_wait_p50_s: float = figure(
        "predict wait p50 (s)",
        "s",
        "median time of one symbol's whole predict step",
        ".2e",
        table=True,
        better="lower",
    )
    predict_wait_p99_s: float = figure(
        "predict wait p99 (s)",
        "s",
        "99th percentile of one symbol's whole predict step",
        ".2e",
        table=True,
        better="lower",
    )
    feature_build_s: float = figure(
        "feature build, in the scan (s)",
        "s",
        "thread CPU time per feature build during the scans",
        ".2e",
        table=True,
        better="lower",
    )
    feature_builds: int = figure("feature builds", "count", "feature vectors built")
    gc_gen0_per_1000_builds: float = figure(
        "gen-0 GCs / 1000 builds",
        "count",
        "generation-0 garbage collections during scans per 1000 builds",
        ".2f",
        table=True,
        better="lower",
    )
    cache_hit_rate: float = figure(
        "cache hit rate",
        "ratio",
        "demand reads served without going to the exchange: the scans' reads and the "
        "candidates' confirmation reads",
        ".4f",
        table=True,
        better="higher",
    )
    confirm_hit_rate: float = figure(
        "  of confirmation reads",
        "ratio",
        "the candidates' higher-timeframe (confirmation) reads served without going to the "
        "exchange",
        ".4f",
        table=True,
        better="higher",
    )
    confirm_reads: int = figure(
        "confirmation reads", "count", "higher-timeframe reads made to confirm candidates"
    )
    cache_hits: int = figure("cache hits", "count", "demand reads that hit")
    cache_misses: int = figure("cache misses", "count", "demand reads that went to the exchange")
    cache_evictions: int = figure("cache evictions", "count", "series evicted")
    prefetches: int = figure(
        "prefetches", "count", "prefetches that went to the exchange", ".0f", table=True
    )
    prefetches_used: int = figure("prefetches used", "count", "prefetched series read in time")
    prefetches_wasted: int = figure("prefetches wasted", "count", "prefetched, never read")
    prefetch_waste_ratio: float = figure(
        "prefetch waste ratio",
        "ratio",
        "wasted prefetches over prefetches",
        ".3f",
        table=True,
        better="lower",
    )
    exchange_requests: int = figure(
        "exchange requests",
        "count",
        "requests the exchange served or refused",
        ".0f",
        table=True,
        better="lower",
    )
    run_seconds: float = figure(
        "run time (s)", "s", "wall time of the whole run", ".1f", table=True, better="lower"
    )
    rss_peak_bytes: float = figure(
        "peak RSS (bytes)",
        "bytes",
        "peak resident memory of the process",
        ".3e",
        table=True,
        better="lower",
    )
    decisions_digest: str = attrs.field(default="")  #: sha256 of every signal and order
    miss_causes: dict[str, int] = attrs.field(factory=dict)
    higher_timeframe_miss_causes: dict[str, int] = attrs.field(factory=dict)
    cache: dict[str, int] = attrs.field(factory=dict)  #: the cache's extra counters
    model: ModelTimes = attrs.field(factory=ModelTimes)
    skipped: dict[str, int] = attrs.field(factory=dict)
    active_plugins: list[str] = attrs.field(factory=list)
    plugin_metrics: dict[str, float] = attrs.field(factory=dict)
    #: each plugin's line (``report_summary``): what it bought this run
    plugin_summaries: dict[str, str] = attrs.field(factory=dict)
    plugin_faults: dict[str, int] = attrs.field(factory=dict)
    #: each scan's wall time, and whether it found its series stale (for the plot)
    scan_times_s: list[float] = attrs.field(factory=list)
    stale: list[bool] = attrs.field(factory=list)
    #: the decision latency of each base candle close measured, in order
    decision_latency_s: list[float] = attrs.field(factory=list)
    # Measured after the scans by ``run(allocations=True)`` only.
    feature_build_uncontended_s: float | None = figure(
        "feature build, one thread (s)",
        "s",
        "fastest untraced one-thread CPU time per build after the run",
        ".2e",
        table=True,
        better="lower",
        default=None,
    )
    feature_alloc_bytes_per_build: float | None = figure(
        "alloc bytes / build",
        "bytes",
        "gross bytes allocated per feature build (tracemalloc)",
        ".0f",
        table=True,
        better="lower",
        default=None,
    )
    feature_alloc_blocks_per_build: float | None = figure(
        "alloc blocks / build",
        "count",
        "gross blocks allocated per feature build",
        ".1f",
        table=True,
        better="lower",
        default=None,
    )
    feature_alloc_peak_bytes: float | None = figure(
        "alloc peak (bytes)", "bytes", "transient peak of a build", ".0f", default=None
    )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (the workload and model times as tables)."""
        return attrs.asdict(self, recurse=True)


def figures() -> dict[str, Figure]:
    """Every measured figure of a run, by its field name, in report order."""
    return {f.name: f.metadata["figure"] for f in attrs.fields(RunReport) if "figure" in f.metadata}
