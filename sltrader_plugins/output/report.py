"""The readable report of ``sltrader run``, from a :class:`RunReport`.

:func:`format_report` is the plain text (a pipe, a file, a log); :func:`report_tables`
the same run as tables for a terminal, labelled and formatted by each figure's
:class:`~sltrader_plugins.host.figures.Figure`.
"""

from __future__ import annotations

from typing import Any

from sltrader_plugins.host.figures import RunReport, figures
from sltrader_plugins.output.terminal import Table


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _title(r: RunReport) -> str:
    w = r.workload
    return f"sltrader run: {w.size} workload, seed {w.seed}, {w.workers} workers, model {w.model}"


def format_report(r: RunReport, counters: bool = False) -> str:
    """:param counters: list every plugin's raw counters too (``sltrader run --counters``)."""
    w = r.workload
    lines = [
        _title(r),
        f"  cycles            {r.cycles} (scan every {w.scan_interval_s:g} s simulated, "
        f"{r.run_seconds:.1f} s real)",
        f"  symbols           {w.universe} per scan of {w.symbols} listed; "
        f"{r.symbols_scanned} analyzed",
        f"  signals           {r.signals}",
        f"  orders            {r.orders} ({r.open_positions} positions open)",
        f"  PnL               realized {r.pnl_realized:+.2f}, unrealized {r.pnl_unrealized:+.2f}",
        f"  cache hit rate    {r.cache_hit_rate:.3f} ({r.cache_hits} hits, "
        f"{r.cache_misses} misses: {_pairs(r.miss_causes)} "
        f"[{_pairs(r.higher_timeframe_miss_causes)}]); confirmation reads "
        f"{r.confirm_hit_rate:.3f} of {r.confirm_reads}",
        f"  prefetches        {r.prefetches} (used {r.prefetches_used}, "
        f"wasted {r.prefetches_wasted})",
        f"  exchange requests {r.exchange_requests}",
        f"  model time        {r.model_s_per_prediction * 1e6:.1f} µs per prediction "
        f"({r.model.predictions} predictions)",
        f"  predict wait      p50 {_ms(r.predict_wait_p50_s)}, p99 {_ms(r.predict_wait_p99_s)}",
        f"  scan time         p50 {_ms(r.scan_p50_s)}, p99 {_ms(r.scan_p99_s)}; "
        f"the first (cold) {_ms(r.scan_cold_s)}, mean {_ms(r.scan_stale_s)} after a "
        f"candle close ({r.stale_scans} scans), {_ms(r.scan_fresh_s)} with fresh series",
        f"  decision latency  p50 {_ms(r.decision_latency_p50_s)}, "
        f"p99 {_ms(r.decision_latency_p99_s)} (scan start to last order, per candle close; "
        f"{len(r.decision_latency_s)} closes)",
        f"  feature build     {r.feature_build_s * 1e6:.1f} µs",
        f"  skipped symbols   {_pairs(r.skipped) or 'none'}",
        f"  active plugins    {', '.join(r.active_plugins) or 'none'}",
    ]
    if r.plugin_summaries:
        lines.append("  what each plugin bought")
        lines.extend(f"    {name:<12} {line}" for name, line in r.plugin_summaries.items())
    if counters and r.plugin_metrics:
        # In the manager's order: plugins by name, each plugin's counters as it lists
        # them (what it saved first).
        lines.append("  plugin counters")
        lines.extend(f"    {k:<32} {v:g}" for k, v in r.plugin_metrics.items())
    lines.append(f"  plugin faults     {_pairs(r.plugin_faults) or 'none'}")
    lines.append(f"  decisions digest  {r.decisions_digest[:16]}")
    return "\n".join(lines)


def _value(value: Any, fmt: str) -> str:
    # A count is whole: the general format would print 12000 as 1.2e+04.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return format(value, fmt)


def _counter(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _counts(counts: dict[str, int], indent: str) -> list[tuple[str, str]]:
    return [(f"{indent}{k}", str(v)) for k, v in counts.items()]


def plugin_groups(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Plugin counters by plugin (their ``"<plugin>."`` prefix), each in the given order."""
    groups: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        plugin, _, counter = name.partition(".")
        groups.setdefault(plugin, {})[counter] = value
    return groups


def report_tables(r: RunReport, counters: bool = False) -> list[Table]:
    """The run as tables: its figures by section, what each plugin bought, then (with
    ``counters``) each plugin's counters."""
    figs = figures()

    def fig(*names: str) -> list[tuple[str, str]]:
        return [
            (figs[name].label, _value(getattr(r, name), figs[name].fmt))
            for name in names
            if getattr(r, name) is not None  # measured by ``run(allocations=True)`` only
        ]

    # Each miss by cause under the misses; those of higher timeframes under theirs.
    causes: list[tuple[str, str]] = []
    for cause, count in r.miss_causes.items():
        causes.append((f"  {cause}", str(count)))
        if cause == "higher_timeframe":
            causes += _counts(r.higher_timeframe_miss_causes, "    ")
    sections = {
        "decisions": [
            *fig("signals", "orders", "open_positions", "pnl_realized", "pnl_unrealized"),
            *fig("trained_samples"),
            ("decisions digest", r.decisions_digest[:16]),
        ],
        "scans": [
            *fig("cycles", "symbols_scanned"),
            ("skipped symbols", str(sum(r.skipped.values()))),
            *_counts(r.skipped, "  "),
            *fig("scan_wall_s", "scan_cold_s", "scan_stale_s", "scan_fresh_s", "stale_scans"),
            *fig("decision_latency_p50_s", "decision_latency_p99_s"),
            *fig("scan_p50_s", "scan_p99_s", "run_seconds", "rss_peak_bytes"),
        ],
        "model": [
            *fig("model_s_per_prediction"),
            ("predictions", str(r.model.predictions)),
            ("  one-row calls", str(r.model.predict_calls)),
            ("  batch calls", str(r.model.batch_calls)),
            *fig("predict_wait_p50_s", "predict_wait_p99_s"),
        ],
        "features": fig(
            "feature_build_s",
            "feature_builds",
            "gc_gen0_per_1000_builds",
            "feature_build_uncontended_s",
            "feature_alloc_bytes_per_build",
            "feature_alloc_blocks_per_build",
            "feature_alloc_peak_bytes",
        ),
        "cache": [
            *fig("cache_hit_rate", "confirm_hit_rate", "confirm_reads"),
            *fig("cache_hits", "cache_misses"),
            *causes,
            *fig("cache_evictions", "prefetches", "prefetches_used", "prefetches_wasted"),
            *fig("prefetch_waste_ratio", "exchange_requests"),
        ],
        "plugins": [
            # One name a row, so a long list does not widen the value column.
            ("active plugins", str(len(r.active_plugins))),
            *((f"  {name}", "") for name in r.active_plugins),
            ("plugin faults", str(sum(r.plugin_faults.values()))),
            *_counts(r.plugin_faults, "  "),
        ],
    }
    run = Table(
        title=_title(r) + (" (interrupted)" if r.interrupted else ""),
        columns=("section", "figure", "value"),
        groups=[
            [(section if i == 0 else "", *row) for i, row in enumerate(rows)]
            for section, rows in sections.items()
        ],
        labels=2,
    )
    tables = [run]
    if r.plugin_summaries:
        tables.append(
            Table(
                title="what each plugin bought",
                columns=("plugin", "this run"),
                groups=[[(name, line)] for name, line in r.plugin_summaries.items()],
                labels=1,
            )
        )
    if counters and r.plugin_metrics:
        tables.append(
            Table(
                title="plugin counters",  # each plugin's in its order: what it saved first
                columns=("plugin", "counter", "value"),
                groups=[
                    [
                        (plugin if i == 0 else "", counter, _counter(value))
                        for i, (counter, value) in enumerate(group.items())
                    ]
                    for plugin, group in plugin_groups(r.plugin_metrics).items()
                ],
                labels=2,
            )
        )
    return tables
