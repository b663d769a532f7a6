"""``ParallelAnalyzer``: a scan's symbols analyzed in the pool's worker threads."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from examples.trader.cache import IntelligentCache
from examples.trader.exchange import BASE_TIMEFRAME
from examples.trader.features import FeatureEngine
from sltrader_plugins import Plugins


@dataclass(frozen=True)
class Prediction:
    symbol: str
    close: float  # of the newest closed candle, the one the prediction was made on
    probability: float  # that the next candle closes higher


@dataclass
class ParallelAnalyzer:
    cache: IntelligentCache
    features: FeatureEngine
    plugins: Plugins
    pool: Executor

    def analyze_all_symbols(self, symbols: Sequence[str]) -> list[Prediction]:
        # map answers in scan order, so nothing downstream depends on thread timing
        return list(self.pool.map(self.analyze_symbol, symbols))

    def analyze_symbol(self, symbol: str) -> Prediction:
        """One symbol, in a worker thread: its klines (through the cache), features and
        prediction."""
        with self.plugins.analyzing(symbol):
            klines = self.cache.get_klines(symbol, BASE_TIMEFRAME)
            features = self.plugins.build_features(  # calls features.build(klines, buffers)
                symbol, BASE_TIMEFRAME, klines.n, self.features.build, klines
            )
            probability = self.plugins.predict(symbol, features)
        return Prediction(symbol, float(klines.close[-1]), probability)
