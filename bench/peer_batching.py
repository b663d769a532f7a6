"""Peer bench: sltrader-batching against the `batched` library and plain ``predict``.

The same models and thread pool size for every set, side by side in one process. Each task is one
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

Sets run interleaved, in the rows of a Williams design (``balanced_order``); the table
shows medians of the repeats as ratios to ``plain``, and sltrader against what the
issue's bound compares it with: ``plain`` at one worker, the peer's best timeout at more
(``sl/plain``, ``sl/peer``; ``paired``: the median of that ratio within each repeat), and
its mean batch size. The JSON holds every repeat's wall time (``walls_s``) and, for
sltrader, its batcher's counters over the timed pass. Before its clock, each run sends a
few symbols through its own path (threads started, caches warm).

A process can favour one set for all of its repeats, by more than the issue's bounds
(docs/batching.md, "Peer bench", has the A/A figures). ``--processes N`` runs the repeats
in N fresh processes, one after the other, and pools them: medians over every process's
repeats, ratios paired within a repeat. ``--control`` adds ``plain-again``, plain
``predict`` once more, whose ratio to ``plain`` (``A/A``) is what the run cannot tell
from noise.

    python bench/peer_batching.py                       # full: 1200 symbols, 1-16 workers
    python bench/peer_batching.py --quick               # answers only (CI, via pytest)
    python bench/peer_batching.py --models histgb --workers 8,16 --json out.json
    python bench/peer_batching.py --workers 1 --no-peer --control --processes 15 --repeats 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import attrs
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
#: plain ``predict`` a second time (``--control``): two identical sets
CONTROL = "plain-again"
#: The batcher's counters reported per sltrader point (over the timed pass).
BATCHER_COUNTS = ("batches", "batched_requests", "alone", "dispatch_idle", "dispatch_wait")


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
#: How the main thread waits for a pass (see :func:`scan`).
Collect = Literal["in-order", "all"]


def run_plain(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
    return model.predict, lambda: None


def run_peer(timeout_ms: float) -> Callable[[ModelAdapter, int], tuple[Predict, Any]]:
    def make(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
        import batched

        processor = batched.dynamically(model.predict_batch, batch_size=32, timeout_ms=timeout_ms)
        return processor, processor.shutdown

    return make


def run_sltrader(config: BatchingConfig) -> Callable[[ModelAdapter, int], tuple[Predict, Any]]:
    def make(model: ModelAdapter, workers: int) -> tuple[Predict, Callable[[], None]]:
        batcher = MicroBatcher(config, workers=workers)

        def predict(features: np.ndarray) -> float:
            result = batcher.submit(model, features)
            return model.predict(features) if result is None else result

        def stop() -> None:
            batcher.close()  # ends its model thread, if it has one

        predict.batcher = batcher  # type: ignore[attr-defined]  # enter/leave, below
        return predict, stop

    return make


def sets(
    config: BatchingConfig | None = None, peers: bool = True, control: bool = False
) -> dict[str, Callable[[ModelAdapter, int], tuple[Predict, Callable[[], None]]]]:
    out: dict[str, Any] = {"plain": run_plain}
    if control:
        out[CONTROL] = run_plain
    if peers:
        for timeout in PEER_TIMEOUTS_MS:
            out[f"batched-{timeout:g}ms"] = run_peer(timeout)
    out["sltrader"] = run_sltrader(config or BatchingConfig())
    return out


@attrs.frozen
class Pass:
    """One timed pass over every symbol."""

    wall_s: float
    model_s_per_prediction: float
    answers: list[float]
    #: sltrader only: the batcher's :data:`BATCHER_COUNTS` over the timed pass
    batcher_counts: dict[str, float] | None


def scan(
    estimator: Any,
    closes: np.ndarray,
    workers: int,
    make: Callable[..., Any],
    collect: Collect = "in-order",
) -> Pass:
    """One pass over every symbol, after a warm-up pass through the same path.

    :param collect: how the main thread waits for the symbols: ``in-order``, one result
        after the other, as ``executor.map`` does (the reference host, most traders); or
        ``all``, one wait for the whole pass (``concurrent.futures.wait``).
    """
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
        futures = [pool.submit(task, i) for i in range(symbols)]
        if collect == "all":
            wait(futures)  # woken once, not once per symbol
        for future in futures:
            future.result()

    with ThreadPoolExecutor(workers) as pool:
        # Before the clock: the threads, and a short pass through the same path, so no set
        # pays for starting up, nor for the set before it (a peer run at one worker mostly
        # sleeps, and the scan right after one ran up to 20 % slower on the shared box).
        one_pass(pool, min(WARM_UP, len(closes)))
        warm, warm_counts = model.times(), _counts(batcher)
        started = time.perf_counter()
        one_pass(pool, len(closes))
        wall = time.perf_counter() - started
        timed, counts = model.times(), _counts(batcher)
    stop()
    model_s = (timed.seconds - warm.seconds) / (timed.predictions - warm.predictions)
    if counts is not None and warm_counts is not None:
        counts = {name: counts[name] - warm_counts[name] for name in BATCHER_COUNTS}
    return Pass(wall, model_s, answers, counts)


def _counts(batcher: MicroBatcher | None) -> dict[str, float] | None:
    if batcher is None:
        return None
    metrics = batcher.metrics()
    return {name: metrics[name] for name in BATCHER_COUNTS}


def balanced_order(names: list[str], repeat: int) -> list[str]:
    """The order of the sets in one repeat: row ``repeat`` of a Williams design.

    Over ``len(names)`` repeats (twice that for an odd count of sets: the square, then
    its rows reversed) every set runs equally often in each position and right after each
    other set equally often. A plain rotation would put a set right after the same
    neighbour almost every time, and the run after a peer's mostly sleeping one-worker run is
    slower on a shared box (docs/batching.md).
    """
    n = len(names)
    first = [0]
    for i in range(1, n):
        first.append((i + 1) // 2 if i % 2 else n - i // 2)
    order = [names[(k + repeat) % n] for k in first]
    return order[::-1] if n % 2 and (repeat // n) % 2 else order


def design_length(count: int) -> int:
    """How many repeats :func:`balanced_order` needs for ``count`` sets to be balanced."""
    return count if count % 2 == 0 else 2 * count


#: One point's passes by set, each list in run order.
SetPasses = dict[str, list[Pass]]


def measure(
    models: Sequence[str] = MODELS,
    workers_list: Sequence[int] = WORKERS,
    symbols: int = 1200,
    repeats: int = 4,
    config: BatchingConfig | None = None,
    peers: bool = True,
    collect: Collect = "in-order",
    out: Callable[[str], None] = print,
    control: bool = False,
    first_repeat: int = 0,
) -> dict[tuple[str, int], SetPasses]:
    """The passes of every point, by (model, workers), each answer checked (raises
    ``AssertionError`` on a wrong one); prints a row per point.

    :param peers: ``False``: no peer sets (the one-worker bound).
    :param collect: how the main thread waits for each pass (:func:`scan`).
    :param control: add :data:`CONTROL`.
    :param first_repeat: the number of the first repeat, which picks its row of the
        Williams design (a process of :func:`in_processes` goes on where the last stopped).
    """
    closes = series(symbols, seed=11)
    makers = sets(config, peers, control)
    passes: dict[tuple[str, int], SetPasses] = {}
    for name in models:
        estimator = train(name)
        reference = ModelAdapter(estimator)
        expected = np.array([reference.predict(build_features(row)) for row in closes])
        scan(estimator, closes[:64], 2, run_plain)  # warm-up: imports, OpenMP pools
        for workers in workers_list:
            done: SetPasses = {s: [] for s in makers}
            for repeat in range(repeats):
                for set_name in balanced_order(list(makers), first_repeat + repeat):
                    result = scan(estimator, closes, workers, makers[set_name], collect)
                    diff = float(np.max(np.abs(np.asarray(result.answers) - expected)))
                    assert diff <= TOLERANCE, f"{name} {workers}w {set_name}: diff {diff:.3g}"
                    done[set_name].append(result)
            passes[name, workers] = done
            out(_row(points_of({(name, workers): done})))
    return passes


def points_of(passes: dict[tuple[str, int], SetPasses]) -> list[dict[str, Any]]:
    return [
        _point(model, workers, set_name, done)
        for (model, workers), by_set in passes.items()
        for set_name, done in by_set.items()
    ]


def in_processes(
    argv: Sequence[str], processes: int, repeats: int, out: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run the bench ``argv`` in ``processes`` fresh processes, one after the other, and
    pool their passes: each point's lists hold one process's repeats after another's, so
    ratios within a repeat stay paired.

    ``out`` takes this process's lines; the children print their own rows to stdout.
    """
    pooled: dict[tuple[str, int], SetPasses] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(processes):
            out(f"process {k + 1}/{processes}")
            raw = Path(tmp) / f"passes-{k}.json"  # one each: a child that wrote none fails
            child = [*argv, "--processes", "1", "--raw", str(raw)]
            child += ["--first-repeat", str(k * repeats)]
            sys.stdout.flush()  # our lines before the child's, also into a file or pipe
            subprocess.run([sys.executable, __file__, *child], check=True)
            for record in json.loads(raw.read_text())["passes"]:
                by_set = pooled.setdefault((record.pop("model"), record.pop("workers")), {})
                by_set.setdefault(record.pop("set"), []).append(Pass(answers=[], **record))
    out(f"pooled, {processes} processes:")
    for key, by_set in pooled.items():
        out(_row(points_of({key: by_set})))
    return points_of(pooled)


def _write_passes(passes: dict[tuple[str, int], SetPasses], path: str) -> None:
    """Every pass but its answers (checked already), for :func:`in_processes`."""
    records = [
        {"model": model, "workers": workers, "set": set_name}
        | attrs.asdict(p, filter=lambda field, _: field.name != "answers")
        for (model, workers), by_set in passes.items()
        for set_name, done in by_set.items()
        for p in done
    ]
    Path(path).write_text(json.dumps({"passes": records}))


def _point(model: str, workers: int, set_name: str, passes: list[Pass]) -> dict[str, Any]:
    """One point: medians over the repeats, and every repeat's wall time (in run order)."""
    point: dict[str, Any] = {
        "model": model,
        "workers": workers,
        "set": set_name,
        "wall_s": statistics.median(p.wall_s for p in passes),
        "model_s_per_prediction": statistics.median(p.model_s_per_prediction for p in passes),
        "walls_s": [p.wall_s for p in passes],
    }
    counts = [p.batcher_counts for p in passes if p.batcher_counts is not None]
    if counts:
        point["mean_batch_size"] = statistics.median(
            c["batched_requests"] / c["batches"] if c["batches"] else 0.0 for c in counts
        )
        for name in ("alone", "dispatch_idle", "dispatch_wait"):
            point[name] = statistics.median(c[name] for c in counts)
    return point


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The median over repeats of ours / theirs within the same repeat.

    The box's speed drifts over seconds; two runs of one repeat are seconds apart, so
    their ratio carries less of that drift than the ratio of two medians.
    """
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def _row(points: Iterable[dict[str, Any]]) -> str:
    by_set = {p["set"]: p for p in points}
    plain = by_set["plain"]
    first = next(iter(by_set.values()))
    cells = [f"{first['model']:>8} {first['workers']:>3}w  plain {plain['wall_s']:7.3f}s"]
    for set_name, point in by_set.items():
        if set_name not in ("plain", CONTROL):  # the control has its own cells, below
            cells.append(f"{set_name} x{point['wall_s'] / plain['wall_s']:.2f}")
    ours = by_set["sltrader"]
    peers = [p for s, p in by_set.items() if s.startswith("batched-")]
    # The bound compares one worker with plain, more workers with the peer's best.
    against = plain if first["workers"] == 1 or not peers else min(peers, key=_wall)
    label = "sl/plain" if against is plain else "sl/peer"
    cells.append(f"{label} x{ours['wall_s'] / against['wall_s']:.3f}")
    cells.append(f"paired x{paired_ratio(ours['walls_s'], against['walls_s']):.3f}")
    if CONTROL in by_set:
        again = by_set[CONTROL]
        cells.append(f"A/A x{again['wall_s'] / plain['wall_s']:.3f}")
        cells.append(f"paired x{paired_ratio(again['walls_s'], plain['walls_s']):.3f}")
    cells.append(f"batch {ours['mean_batch_size']:.1f}")
    return "  ".join(cells)


def _wall(point: dict[str, Any]) -> float:
    return float(point["wall_s"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few symbols, 1 and 4 workers")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)))
    parser.add_argument("--symbols", type=int, default=1200)
    parser.add_argument(
        "--repeats", type=int, default=4, help="a multiple of the sets (twice for an odd count)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=BatchingConfig().max_wait_ms,
        help="sltrader-batching's max_wait_ms",
    )
    parser.add_argument("--no-peer", action="store_true", help="no peer sets (one worker's bound)")
    parser.add_argument(
        "--control", action="store_true", help=f"add {CONTROL}: plain predict a second time"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the bench in this many processes, each with --repeats repeats, and pool them",
    )
    # in_processes' children: where to write their passes, their first repeat's number
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--first-repeat", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--collect",
        choices=("in-order", "all"),
        default="in-order",
        help="how the main thread waits for a pass (see scan())",
    )
    parser.add_argument("--json", help="write the points here")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    symbols, repeats = args.symbols, args.repeats
    if args.quick:
        workers, symbols, repeats = [1, 4], 64, 1
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, not {args.processes}")
    count = len(sets(peers=not args.no_peer, control=args.control))
    total, length = args.processes * repeats, design_length(count)
    # A child (--raw) holds only its share of the repeats; its parent checks the whole.
    if total % length and not (args.quick or args.raw):
        print(
            f"warning: {total} repeats in all is not a multiple of {length}: with {count} "
            "sets the run order is not balanced",
            file=sys.stderr,
        )
    if args.processes > 1:
        print(f"{args.processes} processes, {repeats} repeat(s) in each, pooled")
        # The children write their passes (--raw), never the JSON (below).
        argv = sys.argv[1:] if argv is None else argv
        points = in_processes(argv, args.processes, repeats)
    else:
        print(f"{symbols} symbols, medians of {repeats} interleaved repeats, ratios to plain")
        config = BatchingConfig(max_wait_ms=args.max_wait_ms)
        passes = measure(
            models,
            workers,
            symbols,
            repeats,
            config,
            peers=not args.no_peer,
            collect=args.collect,
            out=print,
            control=args.control,
            first_repeat=args.first_repeat,
        )
        if args.raw:
            _write_passes(passes, args.raw)
            return 0
        points = points_of(passes)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"points": points}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
