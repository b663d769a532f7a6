"""The stock trader as its author wrote it: a daily scan of every symbol on a thread pool.

Each cycle the replay clock moves a day, and every symbol's daily candle closes. A worker
reads the symbol's closed daily candles, builds the pandas features and predicts; a
candidate is confirmed on the weekly candles, read in the same worker. Workers finish in
any order (``as_completed``), so a scan is sorted by symbol before the main thread
places its paper orders. It has its own cache: ``frame_cache.FrameCache``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed

from lightgbm import LGBMClassifier

from examples.stock_trader.exchange import DAILY, WEEKLY, ReplayExchange
from examples.stock_trader.features import latest_features
from examples.stock_trader.frame_cache import FrameCache
from examples.stock_trader.model import predict_up, train_model
from examples.stock_trader.trading import LIMITS, Analysis, PaperBook, Run, candidate_side, confirms


def run(cycles: int, workers: int = 4, exchange: ReplayExchange | None = None) -> Run:
    """Replay ``cycles`` days with ``workers`` threads."""
    exchange = exchange or ReplayExchange()
    clock = exchange.clock
    cache = FrameCache(exchange.fetch_ohlcv, clock, LIMITS)
    model = train_model(exchange)
    book, scans = PaperBook(), []
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(cycles):
            clock.advance()  # a daily candle of every symbol closes
            futures = [pool.submit(analyze, cache, model, s) for s in exchange.symbols]
            scan = sorted(future.result() for future in as_completed(futures))
            for a in scan:
                if a.confirmed:
                    book.trade(a, clock.now())
            scans.append(scan)
    summary = {"cache": f"{cache.hits} hits, {cache.misses} misses"}
    return Run(book.decisions, scans, {**summary, "requests": exchange.requests})


def analyze(cache: FrameCache, model: LGBMClassifier, symbol: str) -> Analysis:
    """One symbol, in a worker thread."""
    daily = cache.get(symbol, DAILY)
    probability = predict_up(model, latest_features(daily))
    side = candidate_side(probability)
    confirmed = side is not None and confirms(cache.get(symbol, WEEKLY), side)
    return Analysis(symbol, float(daily["close"].iat[-1]), probability, side, confirmed)
