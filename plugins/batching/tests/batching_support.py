"""Models and helpers shared by the batching tests (no reference host needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sltrader_batching.batcher import MicroBatcher
from sltrader_batching.config import BatchingConfig


class LinearModel:
    """A thread-safe model whose prediction identifies its input exactly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.single_calls = 0
        self.batch_calls = 0
        self.batch_sizes: list[int] = []

    @staticmethod
    def expected(features: np.ndarray) -> float:
        return float(features[0] * 1_000_003.0 + features[1])

    def predict(self, features: np.ndarray) -> float:
        with self._lock:
            self.single_calls += 1
        return self.expected(features)

    def predict_batch(self, features: Sequence[np.ndarray]) -> Sequence[float]:
        with self._lock:
            self.batch_calls += 1
            self.batch_sizes.append(len(features))
        stacked = np.stack(features)
        return stacked[:, 0] * 1_000_003.0 + stacked[:, 1]


class FaultyModel(LinearModel):
    """``predict_batch`` misbehaves the way ``fault`` says; ``predict`` stays correct."""

    def __init__(self, fault: Callable[[Sequence[np.ndarray]], Any]) -> None:
        super().__init__()
        self._fault = fault

    def predict_batch(self, features: Sequence[np.ndarray]) -> Any:
        with self._lock:
            self.batch_calls += 1
            self.batch_sizes.append(len(features))
        return self._fault(features)


class PickyModel(FaultyModel):
    """Like :class:`FaultyModel`, but ``predict`` raises ``ValueError`` for the features
    ``picky`` picks (its message names them): a caller's own error."""

    def __init__(
        self,
        fault: Callable[[Sequence[np.ndarray]], Any],
        picky: Callable[[np.ndarray], bool],
    ) -> None:
        super().__init__(fault)
        self.picky = picky

    def predict(self, features: np.ndarray) -> float:
        if self.picky(features):
            with self._lock:
                self.single_calls += 1
            raise ValueError(f"bad features {features.tolist()}")
        return super().predict(features)


def gated_model(gate: threading.Event, timeout: float = 10.0) -> FaultyModel:
    """A model whose ``predict_batch`` blocks until ``gate`` is set (at most ``timeout``
    seconds, so a broken test ends), then answers correctly."""

    def blocked(features: Sequence[np.ndarray]) -> list[float]:
        gate.wait(timeout)
        return [LinearModel.expected(f) for f in features]

    return FaultyModel(blocked)


class SingleOnlyModel:
    """A model without ``predict_batch``."""

    def predict(self, features: np.ndarray) -> float:
        return LinearModel.expected(features)


def burn(seconds: float) -> None:
    """Cost CPU time, which is what the batcher measures (a sleep costs none)."""
    end = time.thread_time() + seconds  # CPU time: a loaded machine cannot shorten it
    while time.thread_time() < end:
        pass


def features_for(worker: int, index: int) -> np.ndarray:
    return np.array([float(worker), float(index)])


def predict_via(batcher: MicroBatcher, model: Any, features: np.ndarray) -> float:
    """What a host does: the batcher's answer, else its own ``model.predict``."""
    result = batcher.submit(model, features)
    return model.predict(features) if result is None else result


def run_threads(targets: Sequence[Callable[[], None]], timeout: float = 30.0) -> None:
    """Start one thread per target, join them all, re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced in the test thread below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    alive = [t for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} thread(s) still blocked after {timeout} s"
    if errors:
        raise errors[0]


def outcomes(
    batcher: MicroBatcher,
    model: Any,
    workers: int,
    index: int,
    expected: type[BaseException] | tuple[type[BaseException], ...],
) -> dict[int, object]:
    """Predict ``features_for(i, index)`` from one thread per worker ``i``; each worker's
    result, or the ``expected`` error it raised."""
    outcome: dict[int, object] = {}

    def worker(i: int) -> None:
        try:
            outcome[i] = predict_via(batcher, model, features_for(i, index))
        except expected as exc:
            outcome[i] = exc

    run_threads([lambda i=i: worker(i) for i in range(workers)])
    return outcome


def join_within(threads: Sequence[threading.Thread], seconds: float) -> None:
    """Join ``threads``; fail unless all of them have ended within ``seconds`` in total."""
    deadline = time.perf_counter() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    alive = sum(thread.is_alive() for thread in threads)
    assert not alive, f"{alive} thread(s) not released within {seconds} s"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll (tests only) until ``condition()``; fail after ``timeout``."""
    event = threading.Event()
    deadline = timeout
    step = 0.001
    while not condition():
        if deadline <= 0:
            raise AssertionError("condition not reached in time")
        event.wait(step)
        deadline -= step


def make(**knobs: Any) -> tuple[MicroBatcher, BatchingConfig]:
    workers = knobs.pop("workers", None)
    config = BatchingConfig(**knobs)
    return MicroBatcher(config, workers=workers), config
