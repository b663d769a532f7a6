"""Many threads, many requests: every caller gets exactly its own prediction."""

from __future__ import annotations

import random
import threading

import numpy as np
from batching_support import LinearModel, features_for, make, run_threads

THREADS = 32
REQUESTS = 10_000


def test_32_threads_times_10000_requests_each_get_their_own_result(runner):
    """Untracked callers (worker count known): batches fill by size and idle."""
    model = LinearModel()
    batcher, _ = make(max_batch_size=32, max_wait_ms=5, workers=THREADS)
    # This linear model costs microseconds, so it would run unbatched (cheap); the stress
    # is on the batching path: pin the cost estimate at 1 ms a call.
    for _ in range(8):
        batcher._note_call_cost(0.001)
    batcher._note_call_cost = lambda seconds: None  # type: ignore[method-assign]
    mismatches = [0] * THREADS
    answered = [0] * THREADS

    def worker(w: int) -> None:
        for i in range(REQUESTS):
            features = features_for(w, i)
            result = batcher.submit(model, features)
            if result is None:
                result = model.predict(features)
            # compare with a value computed here, from this caller's own request only
            if result != w * 1_000_003.0 + i:
                mismatches[w] += 1
            answered[w] += 1

    run_threads([lambda w=w: worker(w) for w in range(THREADS)], timeout=120)
    assert sum(mismatches) == 0
    assert answered == [REQUESTS] * THREADS
    m = batcher.metrics()
    total = THREADS * REQUESTS
    assert m["requests"] == total
    # nothing computed twice: every request reached the model exactly once
    assert sum(model.batch_sizes) + model.single_calls == total
    assert m["batched_requests"] == total and m["fallbacks"] == 0
    assert m["mean_batch_size"] > 2  # the batching really happened
    assert batcher._waiting == 0 and batcher._inside == 0 and not batcher._lanes


def test_tracked_workers_with_uneven_work_and_a_varying_model_input(runner):
    """Workers bracket each unit of work, spend random time before predicting (some of it
    away, in an exchange request), and some units never predict: the shape of a scan.
    Results stay exact."""
    model = LinearModel()
    batcher, _ = make(max_batch_size=16, max_wait_ms=1, workers=THREADS)
    mismatches = [0]
    lock = threading.Lock()
    pause = threading.Event()  # never set: Event.wait is a sleep that releases the GIL

    def worker(w: int) -> None:
        rnd = random.Random(w)
        for i in range(300):
            batcher.enter()
            try:
                if rnd.random() < 0.3:
                    batcher.away()  # an exchange request: gone for a moment
                    pause.wait(rnd.random() * 0.001)
                    if rnd.random() < 0.5:
                        batcher.back()  # it returned (else: back at its next submit)
                if rnd.random() < 0.5:
                    pause.wait(rnd.random() * 0.0005)
                if rnd.random() < 0.1:
                    continue  # this symbol fails before predicting
                features = np.array([float(w), float(i), rnd.random()])
                result = batcher.submit(model, features)
                if result is None:
                    result = model.predict(features)
                if result != LinearModel.expected(features):
                    with lock:
                        mismatches[0] += 1
            finally:
                batcher.leave()

    run_threads([lambda w=w: worker(w) for w in range(THREADS)], timeout=120)
    assert mismatches == [0]
    m = batcher.metrics()
    assert sum(model.batch_sizes) + model.single_calls == m["requests"]
    assert m["batches"] > 0 and m["fallbacks"] == 0
    assert batcher._in_flight == 0 and batcher._waiting == 0 and batcher._away == 0
