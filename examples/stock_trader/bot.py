"""The stock trader as its author wrote it: a daily scan of every symbol on a thread pool.

Each cycle the replay clock moves a day, and every symbol's daily candle closes. A worker
reads the symbol's closed daily candles, builds the pandas features and predicts; a
candidate is confirmed on the weekly candles, read in the same worker. Workers finish in
any order (``as_completed``), so a scan is sorted by symbol before the main thread
places its paper orders. Plugins come in through docs/integration.md's call sites.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial

import pandas as pd

from examples.stock_trader.exchange import DAILY, WEEKLY, ReplayExchange
from examples.stock_trader.features import latest_features, ohlcv_frame
from examples.stock_trader.model import train_model
from examples.stock_trader.trading import LIMITS, Analysis, PaperBook, Run, candidate_side, confirms
from sltrader_plugins import Klines, ModelAdapter, Plugins, Signal, SingleFlightCache


def run(cycles: int, workers: int = 4, exchange: ReplayExchange | None = None) -> Run:
    """Replay ``cycles`` days with ``workers`` threads."""
    exchange = exchange or ReplayExchange()
    clock = exchange.clock
    plugins = Plugins.load()  # first: the cache fetches through them
    fetch = plugins.fetching(partial(fetch_klines, exchange))
    cache = SingleFlightCache(fetch, clock, 512, base_timeframe=DAILY, limits=LIMITS)
    model = ModelAdapter(train_model(exchange))  # a batching plugin calls its predict_batch
    book, scans = PaperBook(), []
    with ThreadPoolExecutor(workers) as pool, plugins:
        plugins.start(
            model=model,
            cache=cache,
            clock=clock,
            base_timeframe=DAILY,
            workers=workers,
            confirm_timeframes=(WEEKLY,),
        )
        for _ in range(cycles):
            clock.advance()  # a daily candle of every symbol closes
            plugins.candle_closes()  # between scans: the plugins' idle time
            with plugins.scan(exchange.symbols):
                futures = [pool.submit(analyze, cache, plugins, s) for s in exchange.symbols]
                scan = sorted(future.result() for future in as_completed(futures))
            for a in scan:
                if a.confirmed:
                    plugins.signal(Signal(a.symbol, DAILY, a.side, a.probability, clock.now()))
                    book.trade(a, clock.now())
            scans.append(scan)
        used = dict(active=plugins.active(), faults=plugins.faults(), metrics=plugins.metrics())
    stats = cache.stats()
    summary = {"cache": f"{stats.demand_hits} hits, {stats.demand_misses} misses", **used}
    return Run(book.decisions, scans, {**summary, "requests": exchange.requests})


def analyze(cache: SingleFlightCache, plugins: Plugins, symbol: str) -> Analysis:
    """One symbol, in a worker thread."""
    with plugins.analyzing(symbol):
        daily = frame(cache.get_klines(symbol, DAILY))
        probability = plugins.predict(symbol, latest_features(daily))
        side = candidate_side(probability)
        confirmed = side is not None and confirms(frame(cache.get_klines(symbol, WEEKLY)), side)
    return Analysis(symbol, float(daily["close"].iat[-1]), probability, side, confirmed)


def fetch_klines(exchange: ReplayExchange, symbol: str, timeframe: str, limit: int) -> Klines:
    """``fetch_ohlcv`` as the cache calls it: closed candles (the forming one dropped)."""
    rows = exchange.fetch_ohlcv(symbol, timeframe, limit=limit)
    return Klines.from_ohlcv(rows, timeframe, exchange.clock.now(), symbol)


def frame(klines: Klines) -> pd.DataFrame:
    return ohlcv_frame(klines.open, klines.high, klines.low, klines.close, klines.volume)
