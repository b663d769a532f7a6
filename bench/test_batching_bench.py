"""pytest-benchmark: single predictions against micro-batched ones.

Each round is a small "scan": ``workers`` threads analyze ``SYMBOLS`` symbols; each
symbol waits a little (standing in for the exchange and the feature build, inside the
``enter``/``leave`` bracket the host's analyze hooks give the plugin) and then predicts,
either straight through ``model.predict`` (``single``) or through the ``MicroBatcher``
(``batched``). The model is timed as the host times its own, by
:class:`sltrader_plugins.ModelAdapter`. ``extra_info`` carries the model time per
prediction and the mean batch size, the figures the plugin is about.

Every round's answers are checked against the model's own ``predict`` (to 1e-9), each
symbol must reach the model exactly once, and with more than one worker batches of more
than one request must form: so the smoke run catches a batcher that is wrong, computes
twice, or has stopped batching, not only one that crashes.

    pytest bench/test_batching_bench.py                        # measure
    pytest bench/test_batching_bench.py --benchmark-disable    # smoke (one round each)
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from sltrader_batching.batcher import MicroBatcher
from sltrader_batching.config import BatchingConfig
from sltrader_plugins import ModelAdapter

SYMBOLS = 96
FEATURES = 24
WORK_S = 0.0004  # per-symbol "fetch + features" time, GIL released
ROWS = np.random.default_rng(1).normal(size=(SYMBOLS, FEATURES))
_pause = threading.Event()  # never set: wait() is a GIL-releasing sleep


class _Logistic:
    """A fixed logistic model with a regressor's ``predict`` over stacked rows."""

    def __init__(self) -> None:
        self.weights = np.linspace(-1.0, 1.0, FEATURES)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(rows @ self.weights)))


def cheap_model() -> ModelAdapter:
    return ModelAdapter(_Logistic())


def sklearn_model() -> ModelAdapter:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, FEATURES))
    clf = linear_model.SGDClassifier(loss="log_loss", random_state=0)
    clf.fit(x, (x[:, 0] > 0).astype(int))
    return ModelAdapter(clf)  # column 1 of predict_proba


MODELS = {"cheap": cheap_model, "sklearn": sklearn_model}


def scan(
    model: ModelAdapter, workers: int, batcher: MicroBatcher | None, out: dict[int, float]
) -> None:
    """One scan of the ``ROWS``; each symbol's prediction into ``out``."""
    next_symbol = iter(range(SYMBOLS))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(next_symbol, None)
            if i is None:
                return
            if batcher is not None:
                batcher.enter()
            try:
                _pause.wait(WORK_S)
                row = ROWS[i]
                result = None if batcher is None else batcher.submit(model, row)
                out[i] = model.predict(row) if result is None else result
            finally:
                if batcher is not None:
                    batcher.leave()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("workers", [1, 4, 8, 16])
@pytest.mark.parametrize("mode", ["single", "batched"])
def test_scan(benchmark: Any, mode: str, workers: int, model_name: str) -> None:
    model = MODELS[model_name]()
    batchers: list[MicroBatcher] = []
    outs: list[dict[int, float]] = []  # one per round run, warm-up included

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        batcher = MicroBatcher(BatchingConfig(), workers=workers) if mode == "batched" else None
        if batcher is not None:
            batchers.append(batcher)
        outs.append({})
        return (model, workers, batcher, outs[-1]), {}

    benchmark.group = f"{model_name} model, {workers} worker(s)"
    benchmark.pedantic(scan, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    for batcher in batchers:
        batcher.close()  # ends its model thread, if it has one
    benchmark.extra_info["model_us_per_prediction"] = 1e6 * model.times().seconds_per_prediction
    if batchers:
        metrics = [b.metrics() for b in batchers]
        batched = sum(m["batched_requests"] for m in metrics)
        batches = sum(m["batches"] for m in metrics)
        benchmark.extra_info["mean_batch_size"] = batched / batches if batches else 1.0
        benchmark.extra_info["wait_p99_ms"] = max(m["wait_p99_ms"] for m in metrics)
        if workers == 1:  # one worker never waits for company: every call a batch of one
            assert all(m["singles"] == m["batches"] for m in metrics)
        elif model_name == "sklearn":  # overlapping workers at a costly model: batched
            assert max(m["max_batch_size_seen"] for m in metrics) >= 2
        assert model.times().batch_calls == batches
    # Every round: each symbol's answer is the model's own (a fresh, identical model, so
    # the timed one's figures stay clean), and each symbol reached the model exactly once.
    reference = MODELS[model_name]()
    expected = [reference.predict(row) for row in ROWS]
    assert outs and all(sorted(out) == list(range(SYMBOLS)) for out in outs)
    for out in outs:
        assert max(abs(out[i] - expected[i]) for i in range(SYMBOLS)) <= 1e-9
    assert model.times().predictions == SYMBOLS * len(outs)
