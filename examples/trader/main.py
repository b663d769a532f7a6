"""The trader's loop: replay, scan, signal, paper order; one hourly candle per cycle."""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from examples.trader.analyzer import ParallelAnalyzer
from examples.trader.cache import IntelligentCache
from examples.trader.exchange import BASE_TIMEFRAME, REPLAY_CANDLES, SYMBOLS, ReplayExchange
from examples.trader.features import FeatureEngine
from examples.trader.model import train_model
from examples.trader.trading import CONFIRM_TIMEFRAMES, TradingService
from sltrader_plugins import ModelAdapter, Plugins, Signal

WORKERS = len(SYMBOLS)  # one thread per symbol: a scan is one round of the pool


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.trader", description=__doc__)
    parser.add_argument("--plugins", help='plugins for this run, e.g. "warming"; "" for none')
    parser.add_argument("--cycles", type=int, default=REPLAY_CANDLES, help="hours to replay")
    parser.add_argument("--out", type=Path, help="write a JSON line per prediction and signal")
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= REPLAY_CANDLES:
        parser.error(f"--cycles: 1 to {REPLAY_CANDLES} (the replayed candles)")
    for key, value in run(args).items():
        if isinstance(value, dict) and value:  # counters: one per line
            print(f"{key}:")
            for name, number in value.items():
                print(f"    {name}: {number:g}")
        else:
            print(f"{key}: {value}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    exchange = ReplayExchange()
    clock = exchange.clock
    plugins = Plugins.load(plugins=args.plugins)  # first: the cache fetches through them
    cache = IntelligentCache(exchange, fetch=plugins.fetching(exchange.fetch_klines))
    features = FeatureEngine()
    model = ModelAdapter(train_model(exchange, features))  # it times every model call
    trading = TradingService(cache)
    records: list[dict[str, Any]] = []  # the run's decisions, to compare two runs
    with ThreadPoolExecutor(WORKERS) as pool, plugins:
        plugins.start(
            model=model,
            cache=cache,
            clock=clock,
            base_timeframe=BASE_TIMEFRAME,
            workers=WORKERS,
            confirm_timeframes=CONFIRM_TIMEFRAMES,
        )
        analyzer = ParallelAnalyzer(cache, features, plugins, pool)
        for _ in range(args.cycles):
            clock.advance()  # an hourly candle of every symbol closes
            plugins.candle_closes()  # between scans: the plugins' idle time
            with plugins.scan(SYMBOLS):
                predictions = analyzer.analyze_all_symbols(SYMBOLS)
            records += [
                {"kind": "prediction", "time": clock.now(), **asdict(p)} for p in predictions
            ]
            for signal in trading.confirmed_signals(predictions, clock.now()):
                plugins.signal(signal)  # before its order is placed
                trading.place_order(signal)
                records.append(signal_line(signal))
        times, stats = model.times(), cache.stats()
        summary: dict[str, Any] = {
            "replay": f"{args.cycles} {BASE_TIMEFRAME} candles of {', '.join(SYMBOLS)}, "
            f"signals confirmed on {', '.join(CONFIRM_TIMEFRAMES)}",
            "predictions": times.predictions,
            "signals": sum(r["kind"] == "signal" for r in records),
            "orders": trading.orders,
            "pnl": round(trading.pnl(), 2),
            "model": f"{times.seconds_per_prediction * 1e6:.0f} us per prediction, "
            f"{times.predict_calls} single and {times.batch_calls} batch calls",
            "cache": f"hit rate {stats.hit_rate:.3f}, {stats.prefetches} prefetches, "
            f"{exchange.requests} exchange requests",
        }
        summary.update(active=plugins.active(), faults=plugins.faults(), metrics=plugins.metrics())
    if args.out is not None:
        lines = [*records, {"kind": "summary", **summary}]
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return summary


def signal_line(signal: Signal) -> dict[str, Any]:
    fields = ("time", "symbol", "timeframe", "side", "probability")
    return {"kind": "signal", **{name: getattr(signal, name) for name in fields}}


def use_workers(count: int) -> None:
    """The pool's size (and what ``plugins.start`` is told) in this process's runs, for
    ``bench.cycles(count, workers)``. A module setting rather than an argument of ``run``:
    ``run`` is docs/integration.md's diff, line for line."""
    global WORKERS
    if count < 1:
        raise ValueError(f"workers: at least 1, got {count}")
    WORKERS = count
