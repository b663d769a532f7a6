"""The micro-batcher's dispatch rules, faults and lifecycle (no pluggy involved)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from batching_support import (
    FaultyModel,
    LinearModel,
    PickyModel,
    SingleOnlyModel,
    burn,
    features_for,
    gated_model,
    join_within,
    make,
    outcomes,
    predict_via,
    run_threads,
    wait_until,
)

from sltrader_batching import batcher as batcher_module
from sltrader_batching.batcher import MicroBatcher

# Before the conftest's fixtures replace it for every test.
usable_cpus = batcher_module._usable_cpus
MODEL_THREAD = "sltrader-batching-model"

# Long enough that a test relying on it would visibly hang rather than pass by luck.
FOREVER_MS = 60_000.0
# A wait limit and timeout far above RELEASE_S: a waiter that is released only when its
# timed wait runs out (a wake flag set without a notify) fails the bound below.
LONG_MS = 30_000.0
# How soon a flush, close or leave must release the waiters: generous for a loaded box.
RELEASE_S = 5.0


def metric(batcher: MicroBatcher, name: str) -> float:
    return batcher.metrics()[name]


def waiting(batcher: MicroBatcher) -> int:
    return batcher._waiting  # tests only: how many callers are parked


# -- one worker, trickles: nobody waits for company that cannot come ---------------------


def test_one_tracked_worker_never_waits(model):
    batcher, _ = make(max_wait_ms=FOREVER_MS, workers=8)  # `workers` is ignored once tracked
    for i in range(500):
        batcher.enter()
        features = features_for(0, i)
        # nobody to batch with: handed back at once, the caller predicts by itself
        assert batcher.submit(model, features) is None
        assert predict_via(batcher, model, features) == LinearModel.expected(features)
        batcher.leave()
    m = batcher.metrics()
    assert m["alone"] == m["requests"] == 1000 and m["batches"] == 0
    assert model.batch_sizes == [] and model.single_calls == 500
    assert m["wait_max_ms"] == 0.0  # never parked


def test_one_untracked_worker_never_waits(model):
    batcher, _ = make(max_wait_ms=FOREVER_MS, workers=1)
    for i in range(100):
        assert batcher.submit(model, features_for(0, i)) is None
    m = batcher.metrics()
    assert m["alone"] == 100 and m["batches"] == 0 and m["wait_max_ms"] == 0.0


def test_last_worker_in_flight_is_dispatched_at_once(model):
    """Seven of eight workers finish their symbols without predicting; the eighth does not wait."""
    batcher, _ = make(max_wait_ms=FOREVER_MS)
    for _ in range(8):
        batcher.enter()
    for _ in range(7):
        batcher.leave()
    assert batcher.submit(model, features_for(1, 1)) is None  # it predicts by itself
    batcher.leave()
    assert metric(batcher, "alone") == 1 and metric(batcher, "batches") == 0


def test_a_leaving_worker_releases_the_waiters(model):
    """Two waiters, a third worker leaves without predicting: the two are batched at once."""
    batcher, _ = make(max_wait_ms=LONG_MS, timeout_ms=LONG_MS)
    for _ in range(3):
        batcher.enter()
    results: dict[int, float] = {}

    def worker(i: int) -> None:
        results[i] = predict_via(batcher, model, features_for(i, 7))
        batcher.leave()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiting(batcher) == 2)
    batcher.leave()  # the third worker is done with its symbol
    join_within(threads, RELEASE_S)  # woken, not left to their 30 s timers
    assert results == {i: LinearModel.expected(features_for(i, 7)) for i in range(2)}
    m = batcher.metrics()
    assert m["dispatch_idle"] == 1 and m["dispatch_wait"] == 0 and m["batches"] == 1
    assert model.batch_sizes == [2] and model.single_calls == 0


def test_size_dispatch_by_the_filling_caller(model):
    batcher, _ = make(max_batch_size=4, max_wait_ms=FOREVER_MS, workers=16)
    out: dict[int, float] = {}

    def worker(i: int) -> None:
        out[i] = predict_via(batcher, model, features_for(i, i))

    run_threads([lambda i=i: worker(i) for i in range(8)])
    assert out == {i: LinearModel.expected(features_for(i, i)) for i in range(8)}
    m = batcher.metrics()
    assert m["dispatch_size"] == 2 and m["batches"] == 2 and m["mean_batch_size"] == 4
    assert m["dispatch_wait"] == 0 and m["max_batch_size_seen"] == 4


def test_wait_dispatch_when_company_does_not_come(model):
    batcher, _ = make(max_batch_size=8, max_wait_ms=20, workers=8)
    out: list[float] = []
    run_threads(
        [lambda i=i: out.append(predict_via(batcher, model, features_for(i, 0))) for i in range(3)]
    )
    m = batcher.metrics()
    assert sorted(out) == sorted(LinearModel.expected(features_for(i, 0)) for i in range(3))
    assert m["dispatch_wait"] >= 1 and m["dispatch_size"] == 0
    assert m["wait_p99_ms"] >= 15  # the oldest waited for the deadline


def test_zero_max_wait_never_waits(model):
    batcher, _ = make(max_wait_ms=0, workers=8)
    run_threads([lambda i=i: predict_via(batcher, model, features_for(i, 0)) for i in range(4)])
    m = batcher.metrics()
    # nothing ever waits for company: each request runs at once, side by side
    assert m["dispatch_cheap"] == 4 and m["batches"] == 4 and m["singles"] == 4
    assert m["wait_max_ms"] == 0


def test_untracked_without_worker_count_uses_only_size_and_wait(model):
    batcher, _ = make(max_batch_size=2, max_wait_ms=FOREVER_MS, workers=None)
    run_threads([lambda i=i: predict_via(batcher, model, features_for(i, 0)) for i in range(2)])
    assert metric(batcher, "dispatch_size") == 1 and model.batch_sizes == [2]


# -- flush and shutdown ------------------------------------------------------------------


def park(
    batcher: MicroBatcher, model: object, n: int, out: dict[int, float]
) -> list[threading.Thread]:
    def worker(i: int) -> None:
        out[i] = predict_via(batcher, model, features_for(i, 3))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiting(batcher) == n)
    return threads


def test_flush_dispatches_pending_requests(model):
    batcher, _ = make(max_batch_size=64, max_wait_ms=LONG_MS, timeout_ms=LONG_MS, workers=None)
    out: dict[int, float] = {}
    threads = park(batcher, model, 5, out)
    assert batcher.flush() == 5
    join_within(threads, RELEASE_S)  # woken by the flush, not by their 30 s timers
    assert out == {i: LinearModel.expected(features_for(i, 3)) for i in range(5)}
    m = batcher.metrics()
    assert m["dispatch_flush"] == 1 and m["batches"] == 1 and m["mean_batch_size"] == 5
    assert batcher.flush() == 0  # nothing left


def test_shutdown_answers_pending_requests_and_leaks_nothing(model):
    threads_before = threading.active_count()
    batcher, _ = make(max_batch_size=64, max_wait_ms=LONG_MS, timeout_ms=LONG_MS, workers=None)
    out: dict[int, float] = {}
    threads = park(batcher, model, 6, out)
    started = time.perf_counter()
    assert batcher.close() is True  # every caller answered and gone
    # close() may wait up to timeout_ms (30 s) for them: they must be woken, not time out
    assert time.perf_counter() - started < RELEASE_S
    join_within(threads, RELEASE_S)
    assert out == {i: LinearModel.expected(features_for(i, 3)) for i in range(6)}
    assert metric(batcher, "dispatch_flush") == 1
    # after shutdown calls pass straight through
    assert batcher.submit(model, features_for(9, 9)) is None
    assert metric(batcher, "bypassed") == 1 and batcher.closed
    assert threading.active_count() == threads_before  # on one CPU it owns no thread


def test_close_reports_a_model_call_that_has_not_returned(runner):
    release = threading.Event()
    model = gated_model(release, timeout=30)
    batcher, _ = make(max_batch_size=2, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS, workers=2)
    out: dict[int, float] = {}
    threads = park_running(batcher, model, out)
    # the leader, or the model thread, is inside predict_batch
    assert batcher.close(timeout=0.05) is False
    release.set()
    for thread in threads:
        thread.join(10)
    assert out == {i: LinearModel.expected(features_for(i, 3)) for i in range(2)}


def park_running(
    batcher: MicroBatcher, model: FaultyModel, out: dict[int, float]
) -> list[threading.Thread]:
    """Two callers whose batch of two is inside ``predict_batch``."""

    def worker(i: int) -> None:
        out[i] = predict_via(batcher, model, features_for(i, 3))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: model.batch_calls == 1)
    return threads


# -- faults ----------------------------------------------------------------------------


def raise_error(features):
    raise RuntimeError("model exploded")


def right(features) -> list[float]:
    return [LinearModel.expected(f) for f in features]


def first_is(bad: object):
    """A batch answer that is right except for its first value, which is ``bad``."""
    return lambda features: [bad, *right(features)[1:]]


# What predict_batch may get wrong. Each fails its whole batch (one mechanism): counted in
# batch_errors, logged once, and every caller predicts by itself.
BAD_BATCHES = {
    "raises": raise_error,
    "short": lambda features: right(features)[:-1],
    "long": lambda features: [*right(features), 1.0],
    "shape": lambda features: np.ones((len(features), 2)),
    "column": lambda features: np.array(right(features))[:, None],  # (n, 1), not (n,)
    "strings": lambda features: ["x"] * len(features),
    "numeric-strings": lambda features: [str(v) for v in right(features)],  # numpy parses
    "nothing": lambda features: None,
    "scalar": lambda features: sum(right(features)),
    "generator": lambda features: (v for v in right(features)),
    "mapping": lambda features: dict(enumerate(right(features))),
    "nan": first_is(float("nan")),
    "inf": first_is(float("inf")),
    "-inf": first_is(float("-inf")),
    "numpy-nan": lambda features: np.array([np.nan, *right(features)[1:]]),
    "none": first_is(None),
    "bool": first_is(True),
    "numpy-bool": first_is(np.True_),
    "bools": lambda features: [True] * len(features),
    "bool-array": lambda features: np.ones(len(features), dtype=bool),
    "complex": first_is(1 + 0j),
    "huge-int": first_is(10**400),
}


@pytest.mark.parametrize("fault", BAD_BATCHES.values(), ids=BAD_BATCHES.keys())
def test_a_failed_batch_is_predicted_singly_by_each_caller(fault, caplog):
    model = FaultyModel(fault)
    batcher, _ = make(max_batch_size=4, max_wait_ms=FOREVER_MS, workers=None)
    out: dict[int, float] = {}
    with caplog.at_level(logging.ERROR, logger="sltrader_batching"):
        for round_ in range(3):
            run_threads(
                [
                    lambda i=i, r=round_: out.__setitem__(
                        (r, i), predict_via(batcher, model, features_for(i, r))
                    )
                    for i in range(4)
                ]
            )
    assert out == {
        (r, i): LinearModel.expected(features_for(i, r)) for r in range(3) for i in range(4)
    }
    m = batcher.metrics()
    assert m["batch_errors"] == 3 and m["fallbacks"] == 12 and m["batches"] == 3
    assert model.single_calls == 12  # each request predicted exactly once more, by its caller
    assert len([r for r in caplog.records if "predict_batch failed" in r.message]) == 1


GOOD_BATCHES = {
    "list": right,
    "tuple": lambda features: tuple(right(features)),
    "float64-array": lambda features: np.array(right(features)),
    "float32-array": lambda features: np.array(right(features), np.float32),  # exact here
    "int64-array": lambda features: np.array(right(features), dtype=np.int64),
    "numpy-scalars": lambda features: [np.float64(v) for v in right(features)],
    "python-ints": lambda features: [int(v) for v in right(features)],
}


@pytest.mark.parametrize("answer", GOOD_BATCHES.values(), ids=GOOD_BATCHES.keys())
def test_numpy_and_python_numbers_are_answers(answer):
    """Any sequence or 1-D array of Python or numpy ints and floats is used as it is."""
    model = FaultyModel(answer)
    batcher, _ = make(max_batch_size=4, max_wait_ms=FOREVER_MS, workers=None)
    answers: dict[int, float | None] = {}
    run_threads(
        [
            lambda i=i: answers.__setitem__(i, batcher.submit(model, features_for(i, 0)))
            for i in range(4)
        ]
    )
    assert model.batch_sizes == [4]
    values = [float(v) for v in answer([features_for(i, 0) for i in range(4)])]
    assert sorted(answers.values()) == sorted(values)  # nobody was handed back
    assert all(type(a) is float for a in answers.values())  # what the hook may return
    m = batcher.metrics()
    assert m["batches"] == 1 and m["batch_errors"] == 0 and m["fallbacks"] == 0


def test_a_request_whose_single_predict_raises_gets_that_error_in_its_own_thread():
    model = PickyModel(raise_error, lambda features: features[0] == 2)
    batcher, _ = make(max_batch_size=4, max_wait_ms=FOREVER_MS, workers=None)
    outcome = outcomes(batcher, model, 4, 5, ValueError)
    assert isinstance(outcome[2], ValueError) and str(outcome[2]) == "bad features [2.0, 5.0]"
    for i in (0, 1, 3):
        assert outcome[i] == LinearModel.expected(features_for(i, 5))


def test_a_base_exception_in_the_leader_still_answers_the_followers():
    def interrupt(features):
        raise KeyboardInterrupt

    model = FaultyModel(interrupt)
    batcher, _ = make(max_batch_size=3, max_wait_ms=FOREVER_MS, workers=None)
    outcome = outcomes(batcher, model, 3, 1, KeyboardInterrupt)
    interrupted = [i for i, v in outcome.items() if isinstance(v, KeyboardInterrupt)]
    assert len(interrupted) == 1  # the leader, in its own thread
    for i, value in outcome.items():
        if i not in interrupted:
            assert value == LinearModel.expected(features_for(i, 1))
    assert waiting(batcher) == 0 and batcher._inside == 0


@pytest.mark.parametrize("runner", ["model-thread"], indirect=True)
def test_a_base_exception_on_the_model_thread_answers_every_member_and_it_goes_on(runner):
    calls: list[tuple[int, threading.Thread]] = []

    def interrupt_once(features):
        calls.append((len(features), threading.current_thread()))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return [LinearModel.expected(f) for f in features]

    model = FaultyModel(interrupt_once)
    batcher, _ = make(max_batch_size=3, max_wait_ms=FOREVER_MS, workers=3)
    # the model thread's call raised: each member predicts by itself (predict is sound)
    outcome = outcomes(batcher, model, 3, 1, KeyboardInterrupt)
    assert outcome == {i: LinearModel.expected(features_for(i, 1)) for i in range(3)}
    assert model.single_calls == 3 and metric(batcher, "batch_errors") == 1
    # the same model thread runs the next batch
    outcome = outcomes(batcher, model, 3, 2, KeyboardInterrupt)
    assert outcome == {i: LinearModel.expected(features_for(i, 2)) for i in range(3)}
    assert [size for size, _ in calls] == [3, 3] and model.single_calls == 3
    (_, thread), (_, again) = calls
    assert thread is again and thread.name == MODEL_THREAD
    assert waiting(batcher) == 0 and batcher._inside == 0
    assert batcher.close() and not thread.is_alive()


@pytest.mark.parametrize(
    ("workers", "cpus", "on_model_thread"),
    [(2, 2, True), (4, 8, True), (3, 2, False), (2, 1, False), (None, 8, False)],
)
def test_a_model_thread_runs_batches_only_with_a_cpu_for_each_worker(
    monkeypatch, workers, cpus, on_model_thread
):
    monkeypatch.setattr(batcher_module, "_usable_cpus", lambda: cpus)
    callers: list[threading.Thread] = []

    def record(features):
        callers.append(threading.current_thread())
        return [LinearModel.expected(f) for f in features]

    model = FaultyModel(record)
    batcher, _ = make(max_batch_size=2, max_wait_ms=FOREVER_MS, workers=workers)
    outcome = outcomes(batcher, model, 2, 1, ())
    assert outcome == {i: LinearModel.expected(features_for(i, 1)) for i in range(2)}
    (caller,) = callers  # one batch of two
    assert (caller.name == MODEL_THREAD) is on_model_thread
    assert batcher.close() and not caller.is_alive()  # close() ends the model thread


def test_usable_cpus_are_the_affinity_else_the_cpu_count(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    assert usable_cpus() == (os.cpu_count() or 1)


def test_a_hung_batch_times_out_and_suspends_batching(caplog, runner):
    release = threading.Event()
    model = gated_model(release, timeout=30)
    batcher, _ = make(max_batch_size=3, max_wait_ms=FOREVER_MS, timeout_ms=50, workers=3)
    # who gives up on the hung call after timeout_ms: the followers, or every member
    gave_up = 2 if runner == "leader" else 3
    out: dict[int, float] = {}
    finished: list[int] = []

    def worker(i: int) -> None:
        out[i] = predict_via(batcher, model, features_for(i, 2))
        finished.append(i)

    logged_unlocked: list[bool] = []

    class LockProbe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # Another thread may hold the lock for a moment; only this one holding it
            # would keep it from being free within a second.
            free = batcher._lock.acquire(timeout=1.0)
            if free:
                batcher._lock.release()
            logged_unlocked.append(free)

    probe = LockProbe()
    logging.getLogger("sltrader_batching").addHandler(probe)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(3)]
    try:
        with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
            for thread in threads:
                thread.start()
            wait_until(lambda: len(finished) == gave_up)
            m = batcher.metrics()
            assert m["timeouts"] == 1 and m["fallbacks"] == gave_up
            # while the model call hangs, new requests are not batched behind it
            assert batcher.submit(model, features_for(7, 7)) is None
            assert metric(batcher, "bypassed") == 1
            release.set()
            for thread in threads:
                thread.join(10)
    finally:
        release.set()
        logging.getLogger("sltrader_batching").removeHandler(probe)
    assert out == {i: LinearModel.expected(features_for(i, 2)) for i in range(3)}
    assert [r.levelno for r in caplog.records if "still running" in r.message] == [logging.WARNING]
    # logged with the batcher's lock free: a slow handler does not hold up the workers
    assert logged_unlocked == [True]
    # once the call returned (on the model thread, maybe after its members), batching resumes
    wait_until(lambda: batcher._overdue == 0)
    run_threads([lambda i=i: predict_via(batcher, model, features_for(i, 9)) for i in range(3)])
    assert model.batch_calls == 2 and batcher._overdue == 0


def test_a_model_without_predict_batch_passes_through_with_one_log_line(caplog):
    model = SingleOnlyModel()
    batcher, _ = make(workers=4)
    with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
        assert batcher.check_model(model) is False
        run_threads(
            [
                lambda i=i: [predict_via(batcher, model, features_for(i, j)) for j in range(50)]
                for i in range(4)
            ]
        )
    lines = [r for r in caplog.records if "has no predict_batch" in r.message]
    assert len(lines) == 1 and "SingleOnlyModel" in lines[0].getMessage()
    assert metric(batcher, "unbatchable") == 200 and metric(batcher, "batches") == 0
    assert batcher.check_model(LinearModel()) is True


def test_unbatchable_model_logs_on_first_call_when_not_checked(caplog):
    batcher, _ = make(workers=4)
    with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
        for i in range(3):
            assert batcher.submit(SingleOnlyModel(), features_for(0, i)) is None
    assert len([r for r in caplog.records if "has no predict_batch" in r.message]) == 1


# -- several models ---------------------------------------------------------------------


def predict_per_model(
    batcher: MicroBatcher, models: tuple[LinearModel, ...], per_model: int
) -> dict[tuple[int, int], float]:
    """``per_model`` threads per model, each predicting once; results by (model, thread)."""
    out: dict[tuple[int, int], float] = {}

    def worker(m: LinearModel, k: int, i: int) -> None:
        out[(k, i)] = predict_via(batcher, m, features_for(i, k))

    run_threads(
        [
            lambda i=i, k=k, m=m: worker(m, k, i)
            for k, m in enumerate(models)
            for i in range(per_model)
        ]
    )
    return out


def test_each_model_gets_its_own_batches():
    first, second = LinearModel(), LinearModel()
    batcher, _ = make(max_batch_size=4, max_wait_ms=FOREVER_MS, workers=8)
    out = predict_per_model(batcher, (first, second), 4)
    assert out == {
        (k, i): LinearModel.expected(features_for(i, k)) for k in range(2) for i in range(4)
    }
    assert sum(first.batch_sizes) + first.single_calls == 4
    assert sum(second.batch_sizes) + second.single_calls == 4


def test_idle_wakes_every_models_batch():
    first, second = LinearModel(), LinearModel()
    batcher, _ = make(max_batch_size=8, max_wait_ms=FOREVER_MS, workers=4)
    out = predict_per_model(batcher, (first, second), 2)
    assert len(out) == 4
    assert metric(batcher, "dispatch_wait") == 0 and metric(batcher, "dispatch_idle") >= 1


def test_a_caller_alone_on_its_model_releases_a_batch_waiting_for_it_on_another():
    """Two workers, two models: the first waits for company on one model; the second, with
    nobody to batch with on the other, was the last who could have joined: the first's
    batch goes at once."""
    first, second = LinearModel(), LinearModel()
    batcher, _ = make(max_batch_size=8, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS)
    batcher.enter()
    batcher.enter()
    done: dict[int, float] = {}

    def waiter() -> None:
        done[0] = predict_via(batcher, first, features_for(0, 0))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    wait_until(lambda: waiting(batcher) == 1)
    assert batcher.submit(second, features_for(1, 0)) is None  # alone: it predicts by itself
    join_within([thread], RELEASE_S)  # woken, not left to its timer
    assert done == {0: LinearModel.expected(features_for(0, 0))}
    assert first.batch_sizes == [1] and second.batch_sizes == []
    assert metric(batcher, "dispatch_idle") == 1 and metric(batcher, "alone") == 1


# -- metrics ---------------------------------------------------------------------------


def test_metrics_are_finite_and_bounded(model):
    batcher, _ = make(max_batch_size=4, max_wait_ms=1, workers=4)
    run_threads(
        [
            lambda i=i: [predict_via(batcher, model, features_for(i, j)) for j in range(200)]
            for i in range(4)
        ]
    )
    m = batcher.metrics()
    assert all(np.isfinite(v) for v in m.values())
    assert m["requests"] == 800
    assert m["batched_requests"] == 800 and m["fallbacks"] == 0
    dispatched = sum(v for k, v in m.items() if k.startswith("dispatch_"))
    assert dispatched == m["batches"]  # every batch has one reason, none is counted twice
    assert 0 <= m["wait_p50_ms"] <= m["wait_p99_ms"] <= m["wait_max_ms"] + 1e-9
    assert len(batcher._waits._bins) == 401  # fixed, whatever the number of samples


def test_empty_metrics():
    batcher, _ = make()
    m = batcher.metrics()
    assert m["mean_batch_size"] == 0 and m["wait_p99_ms"] == 0 and m["requests"] == 0


def test_elapsed_time_is_not_used_for_correctness(model):
    # A smoke check that a long-running caller mix finishes well inside the bounds.
    batcher, _ = make(max_batch_size=8, max_wait_ms=2, workers=8)
    started = time.perf_counter()
    run_threads(
        [
            lambda i=i: [predict_via(batcher, model, features_for(i, j)) for j in range(100)]
            for i in range(8)
        ]
    )
    assert time.perf_counter() - started < 30


# -- a caller interrupted while waiting ------------------------------------------------


class InterruptingCondition(threading.Condition):
    """A batch condition whose first ``wait`` in a chosen thread raises."""

    victim: int | None = None
    made: list[threading.Condition] = []

    def __init__(self, lock: Any = None) -> None:
        super().__init__(lock)
        InterruptingCondition.made.append(self)

    def wait(self, timeout: float | None = None) -> bool:
        if threading.get_ident() == InterruptingCondition.victim:
            InterruptingCondition.victim = None
            raise KeyboardInterrupt
        return super().wait(timeout)


def test_a_caller_interrupted_in_an_open_batch_withdraws_its_request(model, monkeypatch):
    batcher, _ = make(max_batch_size=8, max_wait_ms=FOREVER_MS, workers=None)
    monkeypatch.setattr("sltrader_batching.batcher.threading.Condition", InterruptingCondition)
    InterruptingCondition.victim = threading.get_ident()
    with pytest.raises(KeyboardInterrupt):
        batcher.submit(model, features_for(0, 0))
    assert not batcher._lanes
    assert batcher._waiting == 0 and batcher._inside == 0
    # the batcher still works afterwards
    out: dict[int, float] = {}
    threads = park(batcher, model, 2, out)
    batcher.flush()
    for thread in threads:
        thread.join(10)
    assert out == {i: LinearModel.expected(features_for(i, 3)) for i in range(2)}


def test_an_interrupted_opener_hands_the_batch_to_a_member(model, monkeypatch):
    """The batch's wake-ups go to its opener; when the opener leaves by an exception, the
    next member takes over, so a flush still reaches someone who can close the batch."""
    batcher, _ = make(max_batch_size=8, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS)
    monkeypatch.setattr("sltrader_batching.batcher.threading.Condition", InterruptingCondition)
    InterruptingCondition.made.clear()
    outcome: dict[int, object] = {}

    def caller(i: int) -> None:
        try:
            outcome[i] = predict_via(batcher, model, features_for(i, 0))
        except KeyboardInterrupt as exc:
            outcome[i] = exc

    opener = threading.Thread(target=caller, args=(0,), daemon=True)
    opener.start()
    wait_until(lambda: waiting(batcher) == 1)
    member = threading.Thread(target=caller, args=(1,), daemon=True)
    member.start()
    wait_until(lambda: waiting(batcher) == 2)
    InterruptingCondition.victim = opener.ident
    ours = [c for c in InterruptingCondition.made if c._lock is batcher._lock]
    assert len(ours) == 2  # each parked caller sleeps on a condition of its own
    with batcher._lock:  # a spurious wake-up of the opener only: its next wait raises
        ours[0].notify()
    opener.join(10)
    assert isinstance(outcome[0], KeyboardInterrupt)
    assert waiting(batcher) == 1
    assert batcher.flush() == 1
    member.join(10)
    assert outcome[1] == model.expected(features_for(1, 0))
    assert batcher._inside == 0 and not batcher._lanes


def test_a_caller_interrupted_while_its_batch_runs_leaves_cleanly(monkeypatch):
    gate = threading.Event()
    model = gated_model(gate)
    batcher, _ = make(max_batch_size=2, max_wait_ms=FOREVER_MS, timeout_ms=FOREVER_MS)
    monkeypatch.setattr("sltrader_batching.batcher.threading.Condition", InterruptingCondition)
    InterruptingCondition.made.clear()
    outcome: dict[str, object] = {}

    def follower() -> None:
        try:
            outcome["follower"] = batcher.submit(model, features_for(0, 0))
        except KeyboardInterrupt as exc:
            outcome["follower"] = exc

    def leader() -> None:
        outcome["leader"] = predict_via(batcher, model, features_for(1, 1))

    first = threading.Thread(target=follower, daemon=True)
    first.start()
    wait_until(lambda: waiting(batcher) == 1)
    second = threading.Thread(target=leader, daemon=True)
    second.start()
    wait_until(lambda: model.batch_calls == 1)
    InterruptingCondition.victim = first.ident  # its next wait raises
    with batcher._lock:  # a spurious wake-up: the follower re-waits on the running batch
        for cond in InterruptingCondition.made:
            if cond._lock is batcher._lock:
                cond.notify_all()
    first.join(10)
    assert isinstance(outcome["follower"], KeyboardInterrupt)
    assert batcher._waiting == 1  # the leader, still inside the model call
    gate.set()
    second.join(10)
    assert outcome["leader"] == LinearModel.expected(features_for(1, 1))
    assert batcher._waiting == 0 and batcher._inside == 0 and not batcher._lanes


# -- the wait limit follows the model's cost ---------------------------------------------


def batches_of_two(batcher: MicroBatcher, model: object, rounds: int) -> None:
    for r in range(rounds):
        together = threading.Barrier(2)
        run_threads(
            [
                lambda i=i, r=r, t=together: (
                    t.wait(),
                    predict_via(batcher, model, features_for(i, r)),
                )
                for i in range(2)
            ]
        )


def test_a_cheap_model_is_not_waited_for(model):
    batcher, _ = make(max_batch_size=2, max_wait_ms=50, workers=None)
    assert metric(batcher, "wait_limit_ms") == 50  # nothing measured yet
    batches_of_two(batcher, model, 12)
    m = batcher.metrics()
    # once the estimate is trusted (8 calls) a cheap model's requests stop waiting
    assert m["batches"] >= 8
    limit = 4 * m["call_ms"] - 0.1
    assert m["wait_limit_ms"] == pytest.approx(limit if limit >= 0.1 else 0.0)
    assert m["wait_limit_ms"] < 50


def test_a_costly_model_is_waited_for_up_to_max_wait():
    def slow(features):
        burn(0.005)
        return [LinearModel.expected(f) for f in features]

    model = FaultyModel(slow)
    batcher, _ = make(max_batch_size=2, max_wait_ms=2, workers=None)
    batches_of_two(batcher, model, 9)
    m = batcher.metrics()
    assert m["call_ms"] >= 4 and m["wait_limit_ms"] == 2


def test_a_batch_waits_while_company_keeps_coming_up_to_max_wait(model):
    """The wait limit counts from the latest arrival; ``max_wait`` from the first caps it.

    Limit 1 s, cap 1.5 s, callers 0.6 s apart: the third comes after the first's limit
    and is still batched with it; the fourth comes after the cap and opens the next batch.
    """
    batcher, _ = make(max_batch_size=8, max_wait_ms=1500, timeout_ms=FOREVER_MS, workers=None)
    for _ in range(100):
        batcher._note_call_cost(0.25)  # 4 x 250 ms - 100 us: a limit of about 1 s
    assert metric(batcher, "wait_limit_ms") == pytest.approx(1000, abs=1)
    results: dict[int, float] = {}

    def caller(i: int) -> None:
        time.sleep(0.6 * i)
        results[i] = predict_via(batcher, model, features_for(i, 0))

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    join_within(threads[:3], 10)
    wait_until(lambda: waiting(batcher) == 1)
    batcher.flush()  # the fourth need not wait for its own limit
    join_within(threads[3:], 10)
    assert results == {i: LinearModel.expected(features_for(i, 0)) for i in range(4)}
    assert model.batch_sizes == [3, 1]
    assert metric(batcher, "dispatch_wait") == 1 and metric(batcher, "dispatch_flush") == 1


def seem_cheap(batcher: MicroBatcher) -> None:
    """Feed the cost estimate 1 µs batch calls: timing a real call on a loaded box may not."""
    for _ in range(100):
        batcher._note_call_cost(1e-6)


class SettableCostModel(LinearModel):
    """A model whose calls take ``cost`` seconds (0: as cheap as it gets)."""

    cost = 0.0

    def predict(self, features):
        if self.cost:
            burn(self.cost)
        return super().predict(features)

    def predict_batch(self, features):
        if self.cost:
            burn(self.cost)
        return super().predict_batch(features)


def test_a_cheap_model_runs_at_once_and_is_waited_for_again_when_costly():
    """One estimate, fed by every call (batches of one included): no probes, no bypass."""
    model = SettableCostModel()
    batcher, _ = make(max_batch_size=2, max_wait_ms=50, workers=2)
    seem_cheap(batcher)
    assert metric(batcher, "wait_limit_ms") == 0
    for i in range(50):  # one caller, two possible: only a cheap model runs it at once
        assert batcher.submit(model, features_for(0, i)) == model.expected(features_for(0, i))
    assert metric(batcher, "dispatch_cheap") == 50 and metric(batcher, "wait_max_ms") == 0
    model.cost = 0.002  # the model got costly (an online learner after its first update)
    for i in range(80):
        batcher.submit(model, features_for(1, i))
        if metric(batcher, "wait_limit_ms") > 0:
            break
    assert metric(batcher, "wait_limit_ms") == 50 or metric(batcher, "wait_limit_ms") > 0.1
    before = metric(batcher, "dispatch_cheap")
    results: list[float] = []
    run_threads(
        [
            lambda i=i: results.append(predict_via(batcher, model, features_for(2, i)))
            for i in range(2)
        ]
    )
    assert sorted(results) == sorted(model.expected(features_for(2, i)) for i in range(2))
    assert metric(batcher, "dispatch_cheap") == before  # waited for company again


@pytest.mark.parametrize("answered_comes_back", [True, False])
def test_requests_queue_behind_a_running_call_then_wait_for_company(answered_comes_back):
    """While the model runs, arrivals queue. When it returns, the queued batch waits for
    company like any batch on a free model: for the callers the call answered (idle), or
    the wait limit counted from the call's return."""
    gate = threading.Event()
    model = gated_model(gate)
    max_wait_ms = LONG_MS if answered_comes_back else 50.0
    batcher, _ = make(max_batch_size=8, max_wait_ms=max_wait_ms, timeout_ms=LONG_MS, workers=None)
    for _ in range(4):
        batcher.enter()
    out: dict[int, float] = {}
    first_answered = threading.Event()
    first_may_leave = threading.Event()

    def worker(i: int) -> None:
        out[i] = predict_via(batcher, model, features_for(i, 5))
        if i == 0:
            first_answered.set()
            first_may_leave.wait(10)
        batcher.leave()

    first = threading.Thread(target=worker, args=(0,), daemon=True)
    first.start()
    wait_until(lambda: waiting(batcher) == 1)
    for _ in range(3):
        batcher.leave()  # the others are done: the first is dispatched alone (idle)
    wait_until(lambda: model.batch_calls == 1)
    batcher.enter()
    batcher.enter()  # two more callers start while the model runs
    rest = [threading.Thread(target=worker, args=(i,), daemon=True) for i in (1, 2)]
    for thread in rest:
        thread.start()
    wait_until(lambda: waiting(batcher) == 3)
    assert model.batch_calls == 1  # the model is busy: they queue, even though all are in
    started = time.perf_counter()
    gate.set()
    assert first_answered.wait(10)
    if answered_comes_back:
        first_may_leave.set()  # the only caller the queued batch could still wait for
    join_within(rest, RELEASE_S)
    waited = time.perf_counter() - started
    first_may_leave.set()
    join_within([first], RELEASE_S)
    assert out == {i: LinearModel.expected(features_for(i, 5)) for i in range(3)}
    assert model.batch_sizes == [1, 2]
    m = batcher.metrics()
    if answered_comes_back:
        assert m["dispatch_idle"] == 2 and m["dispatch_wait"] == 0
    else:  # the first caller stays out: the queued batch goes at the wait limit
        assert m["dispatch_idle"] == 1 and m["dispatch_wait"] == 1
        assert waited >= max_wait_ms / 1000.0


def test_a_scan_counts_workers_between_two_symbols_as_coming():
    """After begin_scan, a worker that left one symbol and has not entered the next is
    still waited for while symbols remain; at the scan's tail it is not."""
    batcher, _ = make(max_batch_size=8, max_wait_ms=LONG_MS, timeout_ms=LONG_MS, workers=2)
    model = LinearModel()
    batcher.begin_scan(3)
    batcher.enter()
    done: dict[int, float | None] = {}

    def alone(i: int) -> None:
        done[i] = batcher.submit(model, features_for(i, 0))

    first = threading.Thread(target=alone, args=(0,), daemon=True)
    first.start()
    wait_until(lambda: waiting(batcher) == 1)
    time.sleep(0.05)
    assert not done  # the second worker will take a symbol: the batch waits for it
    batcher.enter()  # it does
    alone(1)
    join_within([first], RELEASE_S)
    assert model.batch_sizes == [2]
    batcher.leave()
    batcher.leave()
    batcher.enter()  # the last symbol: nobody else can come, it predicts by itself
    alone(2)
    batcher.leave()
    assert done[2] is None and model.batch_sizes == [2]
    assert metric(batcher, "dispatch_idle") == 1 and metric(batcher, "alone") == 1


def parked_worker(batcher: MicroBatcher, model: Any) -> tuple[threading.Thread, dict[int, float]]:
    """A second worker that enters, predicts and leaves, started and parked in a batch
    that still waits for company 50 ms later; ``done[0]`` gets its answer."""
    done: dict[int, float] = {}

    def worker() -> None:
        batcher.enter()
        done[0] = predict_via(batcher, model, features_for(0, 0))
        batcher.leave()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    wait_until(lambda: waiting(batcher) == 1)
    time.sleep(0.05)
    assert not done  # the batch waits for this thread (the test's own) to predict
    return thread, done


def test_a_batch_does_not_wait_for_a_worker_gone_to_the_exchange():
    """Two workers: one waits for company; the other goes into an exchange request
    (``away``): nobody else can come for now, so the batch goes at once. Back, the worker
    counts again from its next request."""
    batcher, _ = make(max_batch_size=8, max_wait_ms=LONG_MS, timeout_ms=LONG_MS)
    model = LinearModel()
    batcher.enter()
    thread, done = parked_worker(batcher, model)  # this thread is inside a unit of work
    batcher.away()
    join_within([thread], RELEASE_S)
    assert done == {0: LinearModel.expected(features_for(0, 0))}
    assert model.batch_sizes == [1] and metric(batcher, "dispatch_idle") == 1
    assert batcher.submit(model, features_for(1, 0)) is None  # back, and alone now
    batcher.leave()
    assert batcher._away == 0


def test_a_worker_back_from_the_exchange_is_waited_for_again(model):
    """``back`` ends ``away``: the worker is building its features and predicts next."""
    batcher, _ = make(max_batch_size=8, max_wait_ms=LONG_MS, timeout_ms=LONG_MS)
    batcher.enter()
    batcher.away()
    batcher.back()
    batcher.back()  # once is enough; a second is a no-op
    thread, _ = parked_worker(batcher, model)  # this thread is coming
    assert predict_via(batcher, model, features_for(1, 0)) == LinearModel.expected(
        features_for(1, 0)
    )
    join_within([thread], RELEASE_S)
    batcher.leave()
    assert model.batch_sizes == [2] and batcher._away == 0


def test_away_counts_only_inside_a_unit_of_work_and_ends_with_it():
    """``away`` outside enter/leave (the main loop's requests) is ignored, and a worker
    that leaves while away is not left counted as away: later batches still wait."""
    batcher, _ = make(max_batch_size=8, max_wait_ms=LONG_MS, timeout_ms=LONG_MS)
    model = LinearModel()
    batcher.away()  # not inside a unit of work: no effect
    batcher.enter()
    batcher.away()
    batcher.away()  # counted once
    batcher.leave()  # it never came back to submit
    assert batcher._away == 0
    batcher.enter()
    thread, _ = parked_worker(batcher, model)  # two workers inside, none away
    assert predict_via(batcher, model, features_for(1, 0)) == LinearModel.expected(
        features_for(1, 0)
    )
    join_within([thread], RELEASE_S)
    assert model.batch_sizes == [2]


def test_a_wait_limit_too_short_for_company_counts_as_zero():
    batcher, _ = make(max_batch_size=2, max_wait_ms=50, workers=None)
    for _ in range(100):
        batcher._note_call_cost(0.000030)  # 4 x 30 us - 100 us = 20 us: nobody could join
    assert metric(batcher, "wait_limit_ms") == 0.0
    for _ in range(200):
        batcher._note_call_cost(0.000300)  # 4 x 300 us - 100 us = 1.1 ms
    assert metric(batcher, "wait_limit_ms") == pytest.approx(1.1, rel=0.05)
