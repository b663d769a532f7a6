"""The model: LightGBM's ``LGBMClassifier``, fitted on a DataFrame, walk-forward.

It learns P(the next day closes higher) from the rows of every symbol's history: the
days closed before the replay starts. The exchange answers only days up to its clock's
now, and the clock stands at the replay's start while the model is trained, so no day
the replay shows is learnt from; a history day whose next day is replayed is not a
sample either (its label is replayed). One thread and ``deterministic``: every process
fits the same trees, so runs can be compared decision for decision.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from examples.stock_trader.exchange import DAILY, SECONDS, ReplayExchange
from examples.stock_trader.features import FEATURE_NAMES, feature_frame, ohlcv_frame

PARAMS = {
    "n_estimators": 120,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 40,
    "colsample_bytree": 0.8,
    "random_state": 0,
    "n_jobs": 1,  # predictions come from many threads at once: no OpenMP team per call
    "deterministic": True,
    "force_col_wise": True,
    "verbose": -1,
}


def train_model(exchange: ReplayExchange) -> LGBMClassifier:
    """Fitted on the history of every symbol, features by name."""
    now = exchange.clock.now()
    with ThreadPoolExecutor(8) as pool:  # the requests' latencies overlap
        histories = list(pool.map(lambda s: exchange.fetch_ohlcv(s, DAILY), exchange.symbols))
    samples, labels = [], []
    for rows in histories:
        closed = np.array([r for r in rows if r[0] / 1000 + SECONDS[DAILY] <= now])[:, 1:]
        history = feature_frame(ohlcv_frame(*closed.T))
        close = closed[:, 3]
        samples.append(history.iloc[:-1])  # the last day's label is a replayed day
        labels.append(close[1:] > close[:-1])
    table, up = pd.concat(samples, ignore_index=True), np.concatenate(labels)
    known = table.notna().all(axis=1).to_numpy()  # past the indicators' warm-up
    return LGBMClassifier(**PARAMS).fit(table[known], up[known])


def predict_up(model: LGBMClassifier, features: np.ndarray) -> float:
    """P(up) for one feature row, given by name as the model was fitted."""
    return float(model.predict_proba(pd.DataFrame([features], columns=FEATURE_NAMES))[0, 1])
