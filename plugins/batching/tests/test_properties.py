"""Hypothesis: whatever the sizes, waits and arrival pattern, each caller gets its own
result exactly once, nobody is left waiting, and the counters add up."""

from __future__ import annotations

import threading

from batching_support import FaultyModel, LinearModel, features_for, make, run_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pause = threading.Event()  # never set: wait() is a GIL-releasing sleep

arrivals = st.lists(  # per worker: the pause (µs) before each of its requests
    st.lists(st.integers(min_value=0, max_value=300), min_size=0, max_size=12),
    min_size=1,
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_batch_size=st.integers(min_value=1, max_value=12),
    max_wait_ms=st.sampled_from([0.0, 0.05, 0.5, 2.0]),
    pattern=arrivals,
    tracked=st.booleans(),
    skip_every=st.integers(min_value=0, max_value=4),
)
def test_every_caller_gets_its_own_result(
    max_batch_size, max_wait_ms, pattern, tracked, skip_every
):
    model = LinearModel()
    workers = len(pattern)
    batcher, _ = make(
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        workers=None if tracked else workers,
    )
    results: dict[tuple[int, int], float] = {}

    def worker(w: int, pauses: list[int]) -> None:
        for i, micros in enumerate(pauses):
            if tracked:
                batcher.enter()
            try:
                pause.wait(micros / 1e6)
                if skip_every and i % (skip_every + 1) == skip_every:
                    continue  # a unit of work that ends without predicting
                features = features_for(w, i)
                result = batcher.submit(model, features)
                results[(w, i)] = model.predict(features) if result is None else result
            finally:
                if tracked:
                    batcher.leave()

    run_threads([lambda w=w, p=p: worker(w, p) for w, p in enumerate(pattern)], timeout=30)
    expected = {
        (w, i): LinearModel.expected(features_for(w, i))
        for w, pauses in enumerate(pattern)
        for i in range(len(pauses))
        if not (skip_every and i % (skip_every + 1) == skip_every)
    }
    assert results == expected
    m = batcher.metrics()
    n = len(expected)
    assert m["requests"] == n
    assert sum(model.batch_sizes) + model.single_calls == n  # each computed exactly once
    # handed back only with nobody to batch with; the rest came out of a batch
    assert m["batched_requests"] + m["alone"] == n and model.single_calls == m["alone"]
    assert m["max_batch_size_seen"] <= max_batch_size
    assert m["singles"] == model.batch_sizes.count(1)
    reasons = sum(v for k, v in m.items() if k.startswith("dispatch_"))
    assert reasons == m["batches"]
    if max_batch_size == 1 or workers == 1:
        # nothing to batch: every request ran as a batch of one, or by its caller
        assert m["singles"] + m["alone"] == n
    assert batcher._waiting == 0 and batcher._inside == 0 and not batcher._lanes
    assert batcher._in_flight == 0


@settings(max_examples=25, deadline=None)
@given(
    max_batch_size=st.integers(min_value=2, max_value=8),
    workers=st.integers(min_value=2, max_value=8),
    failing=st.sets(st.integers(min_value=0, max_value=9), max_size=10),
)
def test_failed_batches_never_lose_or_duplicate_a_request(max_batch_size, workers, failing):
    calls = [0]

    def sometimes(features):
        calls[0] += 1
        if calls[0] % 10 in failing:
            raise RuntimeError("flaky")
        return [LinearModel.expected(f) for f in features]

    model = FaultyModel(sometimes)
    batcher, _ = make(max_batch_size=max_batch_size, max_wait_ms=0.5, workers=workers)
    results: dict[tuple[int, int], float] = {}

    def worker(w: int) -> None:
        for i in range(20):
            features = features_for(w, i)
            result = batcher.submit(model, features)
            results[(w, i)] = model.predict(features) if result is None else result

    run_threads([lambda w=w: worker(w) for w in range(workers)], timeout=30)
    assert results == {
        (w, i): LinearModel.expected(features_for(w, i)) for w in range(workers) for i in range(20)
    }
    m = batcher.metrics()
    # the host predicted exactly what the batcher handed back (failed batches, batches of
    # one); every other request came out of a successful batch: nothing lost or doubled
    assert model.single_calls == m["fallbacks"]
    assert m["batched_requests"] == workers * 20
