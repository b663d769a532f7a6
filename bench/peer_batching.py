"""Peer bench: sltrader-batching against the `batched` and `batch-inference` libraries.

The same models and thread pool size for every set, side by side in one process. Each task is one
symbol: the worker builds its 28 features (numpy, tens of µs, holding the GIL most of
the time) and then predicts one row, through

* ``plain``: ``model.predict`` in the worker (``predict_proba`` of one row);
* ``batched-<t>ms``: ``batched.dynamically`` (0.1.5) over ``model.predict_batch``, its own
  worker thread collecting requests every ``t`` ms (the peer, at each of its timeouts);
* ``batch-inference-<t>ms``: ``batch_inference.ModelHost`` (1.0) with its
  ``ConcatBatcher``: a host thread fed by a queue, waiting up to ``t`` ms for
  ``wait_n`` = the worker count requests (batches of at most 32); its idle poll
  (``cycle_time``, 1 s) cut to :data:`PEER_IDLE_POLL_S` so that ``stop()`` returns at once;
* ``direct-microbatcher``: :class:`sltrader_batching.batcher.MicroBatcher` driven by hand,
  told the scan's size (``begin_scan``) and bracketed by ``enter``/``leave`` as the
  plugin's hooks do, without the hook calls (what the call sites add is the difference
  to the next set);
* ``sltrader``: sltrader-batching as a trader gets it, through the public call sites of
  :class:`sltrader_plugins.Plugins` in the order of ``examples/trader`` (and
  docs/integration.md): ``Plugins.load(plugins="batching")`` before the clock; on it
  ``plugins.start(...)``, ``plugins.candle_closes()``, ``with plugins.scan(symbols)`` around
  the pool's pass, in each worker ``with plugins.analyzing(symbol)`` around
  ``plugins.build_features(...)`` and ``plugins.predict(...)``, then ``plugins.close()``.
  (In JSON written before this set existed, ``sltrader`` is the batcher driven directly.)

Every set's timed region is one start, one pass over every symbol and one stop, so each
pays its own start-up and shutdown (threads started and joined, the plugin's ``on_start``
and ``on_shutdown``); ``scan_s`` is the pass alone.

Models: scikit-learn ``SGDClassifier`` (cheap, GIL-bound), ``HistGradientBoostingClassifier``
(costly, its batch call releases the GIL) and LightGBM's ``LGBMClassifier`` (``n_jobs=1``;
the bench sets ``OMP_NUM_THREADS=1`` unless it is set), each behind
:class:`sltrader_plugins.ModelAdapter`, which times the model. Every answer of every run is
checked against plain ``predict`` (1e-9); a wrong answer, or a plugin fault, stops the bench.

Sets run interleaved, in the rows of a Williams design (``balanced_order``); the table
shows medians of the repeats as ratios to ``plain``, and sltrader against what the
issue's bound compares it with: ``plain`` at one worker, the best peer (either library, any
setting) at more (``sl/plain``, ``sl/<peer>``; ``paired``: the median of that ratio
within each repeat), and its mean batch size. The JSON holds every repeat's wall time
(``walls_s``), the model's rows per call for every set, and, for ``sltrader`` and
``direct-microbatcher``, the batcher's counters over the timed pass. Before its clock,
each run sends a few symbols through its own path, started and stopped (threads started,
caches warm). Progress goes to stderr; a row per point, then a markdown table, to stdout.

A process can favour one set for all of its repeats, by more than the issue's bounds
(``--control`` below measures it: the A/A ratio). ``--processes N`` runs the repeats
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
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from sltrader_batching.batcher import MicroBatcher
from sltrader_batching.config import BatchingConfig
from sltrader_plugins import (
    Config,
    FeatureBuffers,
    Klines,
    ModelAdapter,
    Plugins,
    SingleFlightCache,
    WallClock,
)
from sltrader_plugins.bench.trader import machine

CANDLES = 300
FEATURES = 28
TOLERANCE = 1e-9
TIMEFRAME = "1h"  #: the scans' base timeframe, as ``plugins.start`` is told
PEER_TIMEOUTS_MS = (0.5, 5.0)  #: ``batched``'s timeouts
PEER_WAITS_MS = (1, 5)  #: ``batch-inference``'s ``wait_ms`` (an int: its type)
#: batch-inference's host thread polls its queue this often when idle, and ``stop()`` waits
#: for the poll to end: its 1 s default would be a second of every timed pass.
PEER_IDLE_POLL_S = 0.001
MAX_BATCH = 32  #: every batching set's largest batch (sltrader-batching's default)
MODELS = ("sgd", "histgb", "lightgbm")
WORKERS = (1, 2, 4, 8, 16)
WARM_UP = 64  #: symbols through each set's path before its clock starts
PLAIN = "plain"
#: plain ``predict`` a second time (``--control``): two identical sets
CONTROL = "plain-again"
DIRECT = "direct-microbatcher"
OURS = "sltrader"
#: the peers' set names start so; the bound compares sltrader with the best of them
PEER_PREFIXES = ("batched-", "batch-inference-")
#: The batcher's counters reported per sltrader point (over the timed pass).
BATCHER_COUNTS = ("batches", "batched_requests", "alone", "dispatch_idle", "dispatch_wait")


def series(symbols: int, seed: int) -> np.ndarray:
    """Close prices, one row per symbol: a seeded random walk."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.01, size=(symbols, CANDLES))
    return 100.0 * np.exp(np.cumsum(steps, axis=1))


def symbol_names(count: int) -> list[str]:
    return [f"S{i:04d}/USDT" for i in range(count)]


def _ema_weights(span: int, window: int = 60) -> np.ndarray:
    alpha = 2.0 / (span + 1.0)
    weights = (1.0 - alpha) ** np.arange(window)[::-1]
    return weights / weights.sum()


#: EMA 12 and 26 over the last 60 closes, as one matrix product per build.
EMA_WEIGHTS = np.array([_ema_weights(12), _ema_weights(26)])
WINDOWS = np.array([5, 10, 20, 50, 100])  #: of the means, deviations and SMAs
LAGS = np.array([1, 5, 20])  #: of the momentum features


def build_features(closes: np.ndarray, buffers: FeatureBuffers | None = None) -> np.ndarray:
    """28 indicators over one symbol's closes (about 45 numpy calls, 40-60 µs).

    Each window's sums come from one cumulative sum over the reversed tail, not a call
    per window: the per-call overhead, not the arithmetic, is what a build of this size
    costs. ``buffers`` is what ``plugins.build_features`` hands a build; the bench loads
    batching alone, so it is always numpy's own and every set allocates alike.
    """
    longest = int(WINDOWS[-1])
    returns = np.diff(np.log(closes[-longest - 1 :]))
    backwards = returns[::-1]
    out = np.empty(FEATURES)
    last = closes[-1]
    means = np.cumsum(backwards)[WINDOWS - 1] / WINDOWS
    squares = np.cumsum(backwards * backwards)[WINDOWS - 1] / WINDOWS
    out[0:5] = means
    out[5:10] = np.sqrt(np.maximum(squares - means * means, 0.0))
    out[10:15] = last * WINDOWS / np.cumsum(closes[: -longest - 1 : -1])[WINDOWS - 1] - 1.0
    out[15:18] = last / closes[-1 - LAGS] - 1.0
    for i, window in enumerate((20, 50)):
        tail = closes[-window:]
        high, low = tail.max(), tail.min()
        out[18 + i] = (last - low) / (high - low + 1e-12)
    recent = returns[-14:]
    out[20] = np.clip(recent, 0.0, None).sum() / (np.abs(recent).sum() + 1e-12)
    before, after = returns[-30:-1], returns[-29:]
    before, after = before - before.mean(), after - after.mean()
    out[21] = before @ after / (np.sqrt((before @ before) * (after @ after)) + 1e-12)
    out[22] = returns[-1]
    ema_fast, ema_slow = EMA_WEIGHTS @ closes[-EMA_WEIGHTS.shape[1] :]
    out[23] = ema_fast / last - 1.0
    out[24] = ema_slow / last - 1.0
    out[25] = (ema_fast - ema_slow) / last
    out[26] = out[7] / (out[9] + 1e-12)  # volatility of 20 against 100 returns
    tail = closes[-50:]
    out[27] = (tail / np.maximum.accumulate(tail)).min() - 1.0  # drawdown over 50
    return out


def train(name: str) -> Any:
    """A fitted estimator, trained on features of other symbols (a fixed seed)."""
    closes = series(1500, seed=7)
    x = np.array([build_features(row) for row in closes])
    noise = np.random.default_rng(8).normal(0.0, 0.5, size=len(x))
    y = (x[:, 12] / x[:, 12].std() + noise > 0).astype(int)
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

        return LGBMClassifier(n_estimators=100, random_state=0, n_jobs=1, verbose=-1).fit(x, y)
    raise ValueError(f"unknown model {name!r}")


#: How the main thread waits for a pass (see :func:`scan`).
Collect = Literal["in-order", "all"]


def _nothing() -> None:
    return None


def _no_scan(symbols: Sequence[str]) -> AbstractContextManager[Any]:
    return nullcontext()


@attrs.frozen
class Session:
    """One set's path, started: what a worker does with one symbol, and how it ends."""

    #: ``analyze(symbol, closes)``: its features and its prediction, in a worker thread
    analyze: Callable[[str, np.ndarray], float]
    stop: Callable[[], object]
    #: ``with scan(symbols):`` around the pool's pass, on the main thread
    scan: Callable[[Sequence[str]], AbstractContextManager[Any]] = _no_scan
    #: after the clock: the batcher's :data:`BATCHER_COUNTS` (``None``: it has none);
    #: raises when the pass went wrong in a way its answers do not show
    report: Callable[[], dict[str, float] | None] = lambda: None


#: A set: given the model and the worker count, what starts its path. The first call is
#: outside the clock (imports, loading plugins); what it returns is called on the clock,
#: as a trader's start-up is part of its run.
Maker = Callable[[ModelAdapter, int], Callable[[], Session]]


def run_plain(model: ModelAdapter, workers: int) -> Callable[[], Session]:
    def analyze(symbol: str, closes: np.ndarray) -> float:
        return model.predict(build_features(closes))

    return lambda: Session(analyze, _nothing)


def run_batched(timeout_ms: float) -> Maker:
    def make(model: ModelAdapter, workers: int) -> Callable[[], Session]:
        import batched

        def start() -> Session:
            processor = batched.dynamically(
                model.predict_batch, batch_size=MAX_BATCH, timeout_ms=timeout_ms
            )

            def analyze(symbol: str, closes: np.ndarray) -> float:
                return float(processor(build_features(closes)))

            return Session(analyze, processor.shutdown)

        return start

    return make


class _StackedRows:
    """The model as batch-inference calls it: ``predict_batch`` of the requests' rows
    concatenated into one array, answering an array (its ``ConcatBatcher`` slices it
    back per request; a list would be taken for a list of outputs)."""

    def __init__(self, model: ModelAdapter) -> None:
        self._model = model

    def predict_batch(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict_batch(rows))


def run_batch_inference(wait_ms: int) -> Maker:
    def make(model: ModelAdapter, workers: int) -> Callable[[], Session]:
        from batch_inference import ModelHost
        from batch_inference.batcher import ConcatBatcher

        def start() -> Session:
            host = ModelHost(
                model_obj=_StackedRows(model),
                batcher=ConcatBatcher(),
                max_batch_size=MAX_BATCH,
                wait_n=workers,  # every worker's request: no reason to wait for more
                wait_ms=wait_ms,
            )
            host.cycle_time = PEER_IDLE_POLL_S
            host.start()

            def analyze(symbol: str, closes: np.ndarray) -> float:
                # A request is a batch of one row; its answer, that row's slice.
                return float(host.predict(build_features(closes)[np.newaxis])[0])

            return Session(analyze, host.stop)

        return start

    return make


def _batcher_counts(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {name: metrics[prefix + name] for name in BATCHER_COUNTS}


def run_direct(config: BatchingConfig) -> Maker:
    def make(model: ModelAdapter, workers: int) -> Callable[[], Session]:
        def start() -> Session:
            batcher = MicroBatcher(config, workers=workers)

            def analyze(symbol: str, closes: np.ndarray) -> float:
                batcher.enter()
                try:
                    features = build_features(closes)
                    result = batcher.submit(model, features)
                    return model.predict(features) if result is None else result
                finally:
                    batcher.leave()

            @contextmanager
            def scan(symbols: Sequence[str]) -> Iterator[None]:
                batcher.begin_scan(len(symbols))  # as the plugin's before_scan does
                yield

            def report() -> dict[str, float]:
                return _batcher_counts(batcher.metrics())

            return Session(analyze, batcher.close, scan, report)

        return start

    return make


def _no_exchange(symbol: str, timeframe: str, limit: int) -> Klines:
    raise RuntimeError("the bench's workers read their closes from memory, not the cache")


def run_sltrader(config: BatchingConfig) -> Maker:
    def make(model: ModelAdapter, workers: int) -> Callable[[], Session]:
        # As a trader loads them, before anything runs; strict: a plugin that fails to
        # load is an error here, not a plugin-free run under the plugin's name.
        settings = Config(plugins={"batching": attrs.asdict(config)}, strict=True)
        plugins = Plugins.load(settings, plugins="batching")
        if plugins.active() != ["batching"]:
            raise RuntimeError(f"expected the batching plugin alone, got {plugins.active()}")
        clock = WallClock()
        # start() wants the trader's cache; batching never reads it, nor does the bench.
        cache = SingleFlightCache(_no_exchange, clock, capacity=1)

        def start() -> Session:
            plugins.start(
                model=model, cache=cache, clock=clock, base_timeframe=TIMEFRAME, workers=workers
            )
            plugins.candle_closes()  # the example's loop announces closes before each scan

            def analyze(symbol: str, closes: np.ndarray) -> float:
                with plugins.analyzing(symbol):
                    features = plugins.build_features(
                        symbol, TIMEFRAME, len(closes), build_features, closes
                    )
                    return plugins.predict(symbol, features)

            def report() -> dict[str, float]:
                faults = plugins.faults()
                if faults:  # the answers are right anyway: the guard fell back
                    raise AssertionError(f"plugin faults: {faults}")
                return _batcher_counts(plugins.metrics(), "batching.")

            return Session(analyze, plugins.close, plugins.scan, report)

        return start

    return make


def sets(
    config: BatchingConfig | None = None,
    peers: bool = True,
    control: bool = False,
    direct: bool = True,
) -> dict[str, Maker]:
    config = config or BatchingConfig()
    out: dict[str, Maker] = {PLAIN: run_plain}
    if control:
        out[CONTROL] = run_plain
    if peers:
        for timeout in PEER_TIMEOUTS_MS:
            out[f"batched-{timeout:g}ms"] = run_batched(timeout)
        for wait_ms in PEER_WAITS_MS:
            out[f"batch-inference-{wait_ms:g}ms"] = run_batch_inference(wait_ms)
    if direct:
        out[DIRECT] = run_direct(config)
    out[OURS] = run_sltrader(config)
    return out


def is_peer(set_name: str) -> bool:
    return set_name.startswith(PEER_PREFIXES)


@attrs.frozen
class Pass:
    """One timed pass over every symbol."""

    wall_s: float  #: start, the pass, stop
    model_s_per_prediction: float
    answers: list[float]
    #: ``sltrader`` and ``direct-microbatcher``: the batcher's :data:`BATCHER_COUNTS`
    #: over the timed pass
    batcher_counts: dict[str, float] | None
    scan_s: float = 0.0  #: the pass alone
    rows_per_call: float = 1.0  #: predictions per model call (``predict`` or a batch)


def one_pass(
    pool: ThreadPoolExecutor,
    session: Session,
    symbols: Sequence[str],
    closes: np.ndarray,
    collect: Collect = "in-order",
) -> list[float]:
    answers = [0.0] * len(symbols)

    def task(i: int) -> None:
        answers[i] = float(session.analyze(symbols[i], closes[i]))

    with session.scan(symbols):
        futures = [pool.submit(task, i) for i in range(len(symbols))]
        if collect == "all":
            wait(futures)  # woken once, not once per symbol
        for future in futures:
            future.result()
    return answers


def scan(
    estimator: Any,
    closes: np.ndarray,
    workers: int,
    make: Maker,
    collect: Collect = "in-order",
) -> Pass:
    """One timed run of a set (start, a pass over every symbol, stop), after a warm-up
    run of its own through the same path.

    :param collect: how the main thread waits for the symbols: ``in-order``, one result
        after the other, as ``executor.map`` does (the reference host, most traders); or
        ``all``, one wait for the whole pass (``concurrent.futures.wait``).
    """
    symbols = symbol_names(len(closes))
    with ThreadPoolExecutor(workers) as pool:
        # Before the clock: the pool's threads, and a short run through the same path
        # (started and stopped), so no set pays for the first use of its code, nor for
        # the set before it (a peer run at one worker mostly sleeps, and the scan right
        # after one ran up to 20 % slower on the shared box).
        warm = make(ModelAdapter(estimator), workers)()
        try:
            one_pass(pool, warm, symbols[:WARM_UP], closes)
        finally:
            warm.stop()
        model = ModelAdapter(estimator)  # its times are the timed run's only
        start = make(model, workers)
        started = time.perf_counter()
        session = start()
        try:
            scanned = time.perf_counter()
            answers = one_pass(pool, session, symbols, closes, collect)
            scan_s = time.perf_counter() - scanned
        finally:
            session.stop()
        wall = time.perf_counter() - started
    counts = session.report()
    times = model.times()
    calls = times.predict_calls + times.batch_calls
    return Pass(
        wall,
        times.seconds / times.predictions,
        answers,
        counts,
        scan_s=scan_s,
        rows_per_call=times.predictions / calls,
    )


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


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    direct: bool = True,
    progress: Callable[[str], None] = _to_stderr,
) -> dict[tuple[str, int], SetPasses]:
    """The passes of every point, by (model, workers), each answer checked (raises
    ``AssertionError`` on a wrong one); prints a row per point.

    :param peers: ``False``: no peer sets (the one-worker bound).
    :param collect: how the main thread waits for each pass (:func:`scan`).
    :param control: add :data:`CONTROL`.
    :param first_repeat: the number of the first repeat, which picks its row of the
        Williams design (a process of :func:`in_processes` goes on where the last stopped).
    :param direct: add :data:`DIRECT`, the batcher without the call sites.
    :param progress: takes a line per pass (default: stderr).
    """
    closes = series(symbols, seed=11)
    makers = sets(config, peers, control, direct)
    passes: dict[tuple[str, int], SetPasses] = {}
    for name in models:
        progress(f"{name}: training")
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
                    progress(
                        f"{name} {workers}w repeat {repeat + 1}/{repeats} {set_name}: "
                        f"{result.wall_s:.3f} s"
                    )
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
        "scan_s": statistics.median(p.scan_s for p in passes),
        "rows_per_call": statistics.median(p.rows_per_call for p in passes),
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


def _against(by_set: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """What the issue's bound compares sltrader with: plain at one worker (or without
    peers), else the best peer, whichever library and setting that is."""
    peers = [(s, p) for s, p in by_set.items() if is_peer(s)]
    if by_set[PLAIN]["workers"] == 1 or not peers:
        return PLAIN, by_set[PLAIN]
    return min(peers, key=lambda item: _wall(item[1]))


def _row(points: Iterable[dict[str, Any]]) -> str:
    by_set = {p["set"]: p for p in points}
    plain = by_set[PLAIN]
    first = next(iter(by_set.values()))
    cells = [f"{first['model']:>8} {first['workers']:>3}w  plain {plain['wall_s']:7.3f}s"]
    for set_name, point in by_set.items():
        if set_name not in (PLAIN, CONTROL):  # the control has its own cells, below
            cells.append(f"{set_name} x{point['wall_s'] / plain['wall_s']:.2f}")
    ours = by_set[OURS]
    label, against = _against(by_set)
    cells.append(f"sl/{label} x{ours['wall_s'] / against['wall_s']:.3f}")
    cells.append(f"paired x{paired_ratio(ours['walls_s'], against['walls_s']):.3f}")
    if DIRECT in by_set:
        cells.append(f"sl/direct x{ours['wall_s'] / by_set[DIRECT]['wall_s']:.3f}")
    if CONTROL in by_set:
        again = by_set[CONTROL]
        cells.append(f"A/A x{again['wall_s'] / plain['wall_s']:.3f}")
        cells.append(f"paired x{paired_ratio(again['walls_s'], plain['walls_s']):.3f}")
    cells.append(f"batch {ours['mean_batch_size']:.1f}")
    return "  ".join(cells)


#: Column titles of :func:`markdown`, by set name (others: the name).
TITLES = {DIRECT: "direct MicroBatcher", OURS: "sltrader-batching (call sites)"}


def markdown(points: Sequence[dict[str, Any]]) -> str:
    """The points as a markdown table: a row per (model, workers), plain's wall time and
    every other set's as a ratio to it, then sltrader against its bound."""
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for point in points:
        groups.setdefault((point["model"], point["workers"]), {})[point["set"]] = point
    names = [s for s in next(iter(groups.values())) if s != PLAIN]
    header = ["model", "workers", "plain", *(TITLES.get(s, s) for s in names)]
    header += ["sltrader vs", "ratio", "paired", "batch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, workers), by_set in groups.items():
        plain = by_set[PLAIN]
        ours = by_set[OURS]
        label, against = _against(by_set)
        cells = [model, str(workers), f"{plain['wall_s']:.3f} s"]
        cells += [f"x{by_set[s]['wall_s'] / plain['wall_s']:.2f}" for s in names]
        cells += [
            label,
            f"x{ours['wall_s'] / against['wall_s']:.3f}",
            f"x{paired_ratio(ours['walls_s'], against['walls_s']):.3f}",
            f"{ours['mean_batch_size']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        "--no-direct", action="store_true", help=f"no {DIRECT} set (the batcher without hooks)"
    )
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
    # One OpenMP thread per model call, as the workload has it (HistGB's predict
    # would start a team per one-row call otherwise); read when sklearn and LightGBM load
    # their OpenMP runtime, which train() imports, and inherited by --processes' children.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    models = args.models.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    symbols, repeats = args.symbols, args.repeats
    if args.quick:
        workers, symbols, repeats = [1, 4], 64, 1
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, not {args.processes}")
    count = len(sets(peers=not args.no_peer, control=args.control, direct=not args.no_direct))
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
            direct=not args.no_direct,
        )
        if args.raw:
            _write_passes(passes, args.raw)
            return 0
        points = points_of(passes)
    result = {
        "command": ["python", "bench/peer_batching.py", *(sys.argv[1:] if argv is None else argv)],
        "machine": machine(),
        "symbols": symbols,
        "repeats": repeats * args.processes,
        "points": points,
    }
    print()
    print(format_markdown(result), end="")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    return 0


def format_markdown(result: dict[str, Any]) -> str:
    """A saved run (``--json``) as docs show it: the table, then its command and machine.
    The same JSON gives the same text."""
    lines = [
        f"{result['symbols']} symbols, medians of {result['repeats']} interleaved repeats; "
        "wall time as a ratio to `plain` (lower is faster)",
        "",
        markdown(result["points"]),
        "",
        f"Command: `{shlex.join(result['command'])}`",
    ]
    found = result["machine"]
    lines.append(f"Machine: {found['platform']}, {found['cpus']} CPUs, Python {found['python']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
