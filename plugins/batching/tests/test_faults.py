"""Fault injection through a real ``PluginManager``: many worker threads, a model whose
``predict_batch`` raises, miscounts, answers non-numbers, hangs or crawls.

Whatever it does, every caller gets what its own ``model.predict(features)`` gives (or
that call's own exception), nobody waits beyond the documented bound, the plugin is
never blamed by the manager's fault guard, and the counters say what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from batching_support import (
    FaultyModel,
    LinearModel,
    PickyModel,
    burn,
    features_for,
    gated_model,
    run_threads,
    wait_until,
)

from sltrader_batching.plugin import BatchingPlugin
from sltrader_plugins import Config, PluginManager, Plugins, WallClock

THREADS = 16
PER_THREAD = 200
# Waits far longer than BOUND_S: a caller left to a timer instead of a rule fails the
# bound. With these, batches close only by size, idle (every worker in flight is
# waiting) and the wake-up of a worker that leaves.
FOREVER_MS = 60_000.0
BOUND_S = 10.0  # the longest any one prediction may take on a loaded box
HANG_TIMEOUT_MS = 200.0  # the bound for the followers of a hung batch
WORK_S = 0.0002  # per symbol "fetch + features", GIL released: workers overlap
_pause = threading.Event()  # never set: wait() is a GIL-releasing sleep


def picky(features: np.ndarray) -> bool:
    """The requests whose own ``model.predict`` raises (one in 23)."""
    return features[1] % 23 == 22


def right(features: Sequence[np.ndarray]) -> list[float]:
    return [LinearModel.expected(f) for f in features]


def raise_error(features: Sequence[np.ndarray]) -> Any:
    raise RuntimeError("batch path broken")


def last_is(bad: object) -> Callable[[Sequence[np.ndarray]], list[Any]]:
    return lambda features: [*right(features)[:-1], bad]


# Each fails every batch as a whole: the plugin hands every request back to its caller.
BAD_BATCHES: dict[str, Callable[[Sequence[np.ndarray]], Any]] = {
    "raises": raise_error,
    "short": lambda features: right(features)[:-1],
    "long": lambda features: [*right(features), 0.0],
    "nan": last_is(float("nan")),
    "none": last_is(None),
    "bool": last_is(True),
    "numpy-bool": lambda features: np.ones(len(features), dtype=bool),
    "not-a-sequence": lambda features: sum(right(features)),
}


def start(model: object, **section: float) -> Plugins:
    manager = PluginManager()
    manager.config = Config.from_mapping(
        {"plugins": {"batching": {"step_aside": False, **section}}}
    )
    manager.register(BatchingPlugin(), "batching")
    plugins = Plugins(manager)
    plugins.start(
        model=model,  # type: ignore[arg-type]
        cache=None,  # type: ignore[arg-type]
        clock=WallClock(),
        base_timeframe="1m",
        workers=THREADS,
    )
    return plugins


class Run:
    """``THREADS`` workers, each analyzing ``PER_THREAD`` symbols the way the host does:
    ``analyzing`` around ``Plugins.predict``. Outcomes and call durations by request."""

    def __init__(self, plugins: Plugins, model: FaultyModel) -> None:
        self.plugins = plugins
        self.model = model
        self.outcome: dict[tuple[int, int], float | ValueError] = {}
        self.seconds: dict[tuple[int, int], float] = {}
        self.finished: list[int] = []  # workers done with all their symbols

    def worker(self, w: int) -> None:
        for i in range(PER_THREAD):
            features = features_for(w, i)
            started = time.perf_counter()
            with self.plugins.analyzing(f"S{w}"):
                # Without it one thread runs many symbols per GIL slice, alone in flight,
                # and every request would be a single: nothing to batch, nothing tested.
                _pause.wait(WORK_S)
                try:
                    self.outcome[(w, i)] = self.plugins.predict(f"S{w}", features, self.model)
                except ValueError as exc:  # a picky request's own error
                    self.outcome[(w, i)] = exc
            self.seconds[(w, i)] = time.perf_counter() - started
        self.finished.append(w)

    def targets(self) -> list[Callable[[], None]]:
        return [lambda w=w: self.worker(w) for w in range(THREADS)]

    def check_outcomes(self, workers: Sequence[int] = range(THREADS)) -> None:
        """Each request of ``workers`` got what its own ``model.predict`` gives."""
        for w in workers:
            for i in range(PER_THREAD):
                features, got = features_for(w, i), self.outcome[(w, i)]
                if isinstance(self.model, PickyModel) and self.model.picky(features):
                    assert isinstance(got, ValueError), (w, i, got)
                    assert str(got) == f"bad features {features.tolist()}"
                else:
                    assert type(got) is float, (w, i, got)
                    assert abs(got - LinearModel.expected(features)) <= 1e-9, (w, i, got)

    def metrics(self) -> dict[str, float]:
        return {k.removeprefix("batching."): v for k, v in self.plugins.metrics().items()}


@pytest.mark.parametrize("fault", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_failing_batches_under_load(fault: Callable[..., Any], caplog: Any, runner: str) -> None:
    model = PickyModel(fault, picky)
    plugins = start(model, max_batch_size=8, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS)
    run = Run(plugins, model)
    with caplog.at_level(logging.ERROR, logger="sltrader_batching"):
        run_threads(run.targets(), timeout=120)
    run.check_outcomes()
    assert max(run.seconds.values()) < BOUND_S  # nobody was left to a 60 s timer
    m = run.metrics()
    total = THREADS * PER_THREAD
    assert m["requests"] == total and m["batches"] > 0
    # every batch failed as a whole, and each of its requests was predicted by its caller
    assert m["batch_errors"] == m["batches"]
    assert m["fallbacks"] == m["batched_requests"]
    assert m["batched_requests"] + m["alone"] == total  # batches of one included
    assert model.single_calls == total  # the host predicted each request exactly once
    assert m["timeouts"] == 0 and m["bypassed"] == 0
    assert len([r for r in caplog.records if "predict_batch failed" in r.message]) == 1
    assert plugins.faults() == {}  # the plugin never raised or answered a non-number
    plugins.close()


def test_a_slow_model_is_waited_for_and_batched_under_load() -> None:
    def slow(features: Sequence[np.ndarray]) -> list[float]:
        _pause.wait(0.005)  # wall time (a model in native code) ...
        burn(0.001)  # ... and CPU time, so the wait limit stays above zero
        return right(features)

    model = FaultyModel(slow)
    plugins = start(model, max_batch_size=8, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS)
    run = Run(plugins, model)
    run_threads(run.targets(), timeout=120)
    run.check_outcomes()
    assert max(run.seconds.values()) < BOUND_S
    m = run.metrics()
    total = THREADS * PER_THREAD
    assert m["batch_errors"] == 0 and m["timeouts"] == 0 and m["fallbacks"] == 0
    assert m["batches"] > 0 and m["max_batch_size_seen"] >= 2
    assert m["batched_requests"] + m["alone"] == total  # batches of one included
    assert sum(model.batch_sizes) + model.single_calls == total  # each computed once
    assert plugins.faults() == {}
    plugins.close()


def test_a_hung_model_never_stalls_the_other_callers(caplog: Any, runner: str) -> None:
    """``predict_batch`` blocks until the test opens the gate, long after timeout_ms.

    Every worker but those inside a hung call must finish all its predictions while the
    gate is still shut: the members of a hung batch give up after timeout_ms and predict
    by themselves, and later requests pass through while the hung call is pending. A
    hung call holds its leader; on the model thread it holds none of its batch's callers
    (only a caller alone in its batch calls the model in its own thread).
    """
    gate = threading.Event()
    model = gated_model(gate, timeout=120)  # the failsafe: a broken test still ends
    plugins = start(model, max_batch_size=8, max_wait_ms=FOREVER_MS, timeout_ms=HANG_TIMEOUT_MS)
    run = Run(plugins, model)
    threads = [threading.Thread(target=t, daemon=True) for t in run.targets()]
    try:
        with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
            for thread in threads:
                thread.start()
            # While the gate is shut, each predict_batch call holds exactly one worker,
            # but the model thread's.
            on_thread = 0 if runner == "leader" else 1
            wait_until(
                lambda: len(run.finished) + model.batch_calls - on_thread >= THREADS, timeout=60
            )
            hung = model.batch_calls
            assert hung >= 1 and 0 < len(run.finished) == THREADS - (hung - on_thread)
            assert not gate.is_set()
            run.check_outcomes(run.finished)
            bound = HANG_TIMEOUT_MS / 1000 + BOUND_S
            assert max(run.seconds[(w, i)] for w in run.finished for i in range(PER_THREAD)) < (
                bound
            )
            m = run.metrics()
            assert m["timeouts"] >= 1 and m["bypassed"] > 0 and m["batch_errors"] == 0
            assert m["fallbacks"] >= 1  # the followers of the hung batches
    finally:
        gate.set()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    run.check_outcomes()  # those held got their batch's answers once the call returned
    # a model thread counts its call once it returns, maybe after the workers ended
    wait_until(lambda: run.metrics()["batches"] == model.batch_calls)
    m = run.metrics()
    total = THREADS * PER_THREAD
    assert m["requests"] == total and m["batch_errors"] == 0
    # The host predicted exactly the requests the plugin handed back; the rest came out
    # of a batch (a timed-out follower's request was computed by both: the one exception).
    # the host predicted exactly what the batcher handed back
    assert model.single_calls == m["fallbacks"] + m["bypassed"] + m["alone"]
    assert sum(model.batch_sizes) == m["batched_requests"]
    warnings = [r for r in caplog.records if "still running after" in r.message]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert plugins.faults() == {}
    plugins.close()
