"""Peer bench: sltrader-batching against the `batched` library and plain ``predict``.

One process, the same models and the same thread pool for every set. Each task is one
symbol: the worker builds its features (numpy, tens of µs, holding the GIL most of the
time) and then predicts one row, through

* ``plain``: ``model.predict`` in the worker;
* ``batched-<t>ms``: ``batched.dynamically`` (0.1.5) over ``model.predict_batch``, its own
  worker thread collecting requests every ``t`` ms (the peer, at each of its timeouts);
* ``sltrader``: :class:`sltrader_batching.batcher.MicroBatcher`, told the scan's size
  (``begin_scan``) and bracketed by ``enter``/``leave``, as the host's hooks do.

Models: scikit-learn ``SGDClassifier`` (cheap, GIL-bound), ``HistGradientBoostingClassifier``
(costly, its batch call releases the GIL) and LightGBM's ``LGBMClassifier``, each behind
:class:`sltrader_plugins.ModelAdapter`, which times the model. Every answer of every run is
checked against plain ``predict`` (1e-9); a wrong answer stops the bench.

Sets run interleaved, in the rows of a Williams square (``balanced_order``); the table
shows medians of the repeats as ratios to ``plain``, and ``sl/peer``: sltrader against the
peer's best timeout. Before its clock, each run sends a few symbols through its own path
(threads started, caches warm).

    python bench/peer_batching.py                       # full: 1200 symbols, 1-16 workers
    python bench/peer_batching.py --quick               # answers only (CI, via pytest)
    python bench/peer_batching.py --models histgb --workers 8,16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sltrader_batching.batcher import MicroBatcher
from sltrader_batching.config import BatchingConfig
from sltrader_plugins import ModelAdapter

CANDLES = 300
FEATURES = 16
TOLERANCE = 1e-9
PEER_TIMEOUTS_MS = (0.5, 5.0)
MODELS = ("sgd", "histgb", "lightgbm")
WORKERS = (1, 2, 4, 8, 16)
WARM_UP = 64  #: symbols through each set's path before its clock starts


def series(symbols: int, seed: int) -> np.ndarray:
    """Close prices, one row per symbol: a seeded random walk."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.01, size=(symbols, CANDLES))
    return 100.0 * np.exp(np.cumsum(steps, axis=1))


def build_features(closes: np.ndarray) -> np.ndarray:
    """A small indicator set over one symbol's closes (about 20 numpy calls)."""
    returns = np.diff(np.log(closes))
    out = np.empty(FEATURES)
    for i, window in enumerate((5, 10, 20, 50)):
        tail = returns[-window:]
        out[i] = tail.mean()
        out[4 + i] = tail.std()
        out[8 + i] = closes[-1] / closes[-window:].mean() - 1.0
    high, low = closes[-50:].max(), closes[-50:].min()
    out[12] = (closes[-1] - low) / (high - low + 1e-12)
    gains = np.clip(returns[-14:], 0.0, None).sum()
    out[13] = gains / (np.abs(returns[-14:]).sum() + 1e-12)
    out[14] = np.corrcoef(returns[-30:-1], returns[-29:])[0, 1]
    out[15] = returns[-1]
    return out


def train(name: str) -> Any:
    """A fitted estimator, trained on features of other symbols (a fixed seed)."""
    closes = series(1500, seed=7)
    x = np.array([build_features(row) for row in closes])
    noise = np.random.default_rng(8).normal(0.0, 0.5, size=len(x))
    y = (x[:, 8] / x[:, 8].std() + noise > 0).astype(int)
    if name == "sgd":
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)).fit(
            x, y
        )
    if name == "histgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)
    if name == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=100, random_state=0, verbose=-1).fit(x, y)
    raise ValueError(f"unknown model {name!r}")


Predict = Callable[[np.ndarray], float]


def run_plain(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
    return model.predict, lambda: None


def run_peer(timeout_ms: float) -> Callable[[ModelAdapter, int], tuple[Predict, Any]]:
    def make(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
        import batched

        processor = batched.dynamically(model.predict_batch, batch_size=32, timeout_ms=timeout_ms)
        return processor, processor.shutdown

    return make


def run_sltrader(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
    batcher = MicroBatcher(BatchingConfig(), workers=workers)

    def predict(features: np.ndarray) -> float:
        result = batcher.submit(model, features)
        return model.predict(features) if result is None else result

    predict.batcher = batcher  # type: ignore[attr-defined]  # enter/leave, below
    return predict, lambda: None


def sets() -> dict[str, Callable[[ModelAdapter, int], tuple[Predict, Callable[[], None]]]]:
    out: dict[str, Any] = {"plain": run_plain}
    for timeout in PEER_TIMEOUTS_MS:
        out[f"batched-{timeout:g}ms"] = run_peer(timeout)
    out["sltrader"] = run_sltrader
    return out


def scan(
    estimator: Any, closes: np.ndarray, workers: int, make: Callable[..., Any]
) -> tuple[float, float, list[float]]:
    """One pass over every symbol: wall seconds, model seconds per prediction, answers."""
    model = ModelAdapter(estimator)
    predict, stop = make(model, workers)
    batcher: MicroBatcher | None = getattr(predict, "batcher", None)
    answers = [0.0] * len(closes)

    def task(i: int) -> None:
        if batcher is not None:
            batcher.enter()
        try:
            answers[i] = float(predict(build_features(closes[i])))
        finally:
            if batcher is not None:
                batcher.leave()

    def one_pass(pool: ThreadPoolExecutor, symbols: int) -> None:
        if batcher is not None:
            batcher.begin_scan(symbols)  # as the host's before_scan hook does
        for future in [pool.submit(task, i) for i in range(symbols)]:
            future.result()

    with ThreadPoolExecutor(workers) as pool:
        # Before the clock: the threads, and a short pass through the same path, so no set
        # pays for starting up, nor for the set before it (a peer run at one worker mostly
        # sleeps, and the scan right after one ran up to 20 % slower on the shared box).
        one_pass(pool, min(WARM_UP, len(closes)))
        warm = model.times()
        started = time.perf_counter()
        one_pass(pool, len(closes))
        wall = time.perf_counter() - started
        timed = model.times()
    stop()
    model_s = (timed.seconds - warm.seconds) / (timed.predictions - warm.predictions)
    return wall, model_s, answers


def balanced_order(names: list[str], repeat: int) -> list[str]:
    """The order of the sets in one repeat: row ``repeat`` of a Williams square.

    Over ``len(names)`` repeats every set runs once in each position and right after each
    other set exactly once (for an even count of sets). A plain rotation would put a set
    right after the same neighbour almost every time, and the run after a peer's mostly
    sleeping one-worker run is slower on a shared box: that was a bias of up to 20 %.
    """
    n = len(names)
    first = [0]
    for i in range(1, n):
        first.append((i + 1) // 2 if i % 2 else n - i // 2)
    return [names[(k + repeat) % n] for k in first]


def run(
    models: Sequence[str] = MODELS,
    workers_list: Sequence[int] = WORKERS,
    symbols: int = 1200,
    repeats: int = 3,
    out: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every point of the bench; raises ``AssertionError`` on any wrong answer."""
    closes = series(symbols, seed=11)
    makers = sets()
    points: list[dict[str, Any]] = []
    for name in models:
        estimator = train(name)
        reference = ModelAdapter(estimator)
        expected = np.array([reference.predict(build_features(row)) for row in closes])
        scan(estimator, closes[:64], 2, run_plain)  # warm-up: imports, OpenMP pools
        for workers in workers_list:
            walls: dict[str, list[float]] = {s: [] for s in makers}
            per_prediction: dict[str, list[float]] = {s: [] for s in makers}
            for repeat in range(repeats):
                for set_name in balanced_order(list(makers), repeat):
                    wall, model_s, answers = scan(estimator, closes, workers, makers[set_name])
                    diff = float(np.max(np.abs(np.asarray(answers) - expected)))
                    assert diff <= TOLERANCE, f"{name} {workers}w {set_name}: diff {diff:.3g}"
                    walls[set_name].append(wall)
                    per_prediction[set_name].append(model_s)
            for set_name in makers:
                points.append(
                    {
                        "model": name,
                        "workers": workers,
                        "set": set_name,
                        "wall_s": statistics.median(walls[set_name]),
                        "model_s_per_prediction": statistics.median(per_prediction[set_name]),
                    }
                )
            out(_row(points[-len(makers) :]))
    return points


def _row(points: Iterable[dict[str, Any]]) -> str:
    by_set = {p["set"]: p for p in points}
    plain = by_set["plain"]["wall_s"]
    first = next(iter(by_set.values()))
    cells = [f"{first['model']:>8} {first['workers']:>3}w  plain {plain:7.3f}s"]
    peers = [p["wall_s"] for s, p in by_set.items() if s.startswith("batched-")]
    for set_name, point in by_set.items():
        if set_name != "plain":
            cells.append(f"{set_name} x{point['wall_s'] / plain:.2f}")
    ours = by_set["sltrader"]["wall_s"]
    cells.append(f"sl/peer x{ours / min(peers):.2f}")
    return "  ".join(cells)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few symbols, 1 and 4 workers")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)))
    parser.add_argument("--symbols", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the points here")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    symbols, repeats = args.symbols, args.repeats
    if args.quick:
        workers, symbols, repeats = [1, 4], 64, 1
    print(f"{symbols} symbols, medians of {repeats} interleaved repeats, ratios to plain")
    points = run(models, workers, symbols, repeats)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"points": points}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
