"""The readable report of ``sltrader run``, from a :class:`RunReport`."""

from __future__ import annotations

from sltrader_plugins.host.figures import RunReport


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def format_report(r: RunReport) -> str:
    w = r.workload
    lines = [
        f"sltrader run: {w.size} workload, seed {w.seed}, {w.workers} workers, model {w.model}",
        f"  cycles            {r.cycles} (scan every {w.scan_interval_s:g} s simulated, "
        f"{r.run_seconds:.1f} s real)",
        f"  symbols           {w.universe} per scan of {w.symbols} listed; "
        f"{r.symbols_scanned} analyzed",
        f"  signals           {r.signals}",
        f"  orders            {r.orders} ({r.open_positions} positions open)",
        f"  PnL               realized {r.pnl_realized:+.2f}, unrealized {r.pnl_unrealized:+.2f}",
        f"  cache hit rate    {r.cache_hit_rate:.3f} ({r.cache_hits} hits, "
        f"{r.cache_misses} misses: {_pairs(r.miss_causes)} "
        f"[{_pairs(r.higher_timeframe_miss_causes)}])",
        f"  prefetches        {r.prefetches} (used {r.prefetches_used}, "
        f"wasted {r.prefetches_wasted})",
        f"  exchange requests {r.exchange_requests}",
        f"  model time        {r.model_s_per_prediction * 1e6:.1f} µs per prediction "
        f"({r.model.predictions} predictions)",
        f"  predict wait      p50 {_ms(r.predict_wait_p50_s)}, p99 {_ms(r.predict_wait_p99_s)}",
        f"  scan time         p50 {_ms(r.scan_p50_s)}, p99 {_ms(r.scan_p99_s)}; "
        f"mean {_ms(r.scan_stale_s)} with stale series ({r.stale_scans} scans: "
        f"the first, and after a candle close), {_ms(r.scan_fresh_s)} with fresh ones",
        f"  feature build     {r.feature_build_s * 1e6:.1f} µs",
        f"  skipped symbols   {_pairs(r.skipped) or 'none'}",
        f"  active plugins    {', '.join(r.active_plugins) or 'none'}",
    ]
    if r.plugin_metrics:
        lines.append("  plugin metrics")
        lines.extend(f"    {k:<32} {v:g}" for k, v in sorted(r.plugin_metrics.items()))
    lines.append(f"  plugin faults     {_pairs(r.plugin_faults) or 'none'}")
    lines.append(f"  decisions digest  {r.decisions_digest[:16]}")
    return "\n".join(lines)
