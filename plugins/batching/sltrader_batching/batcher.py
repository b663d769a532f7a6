"""A thread-safe micro-batcher for blocking callers, independent of pluggy.

Design (leader/follower, no threads of its own):

* Each caller of :meth:`MicroBatcher.submit` joins the open batch of its model and blocks.
* The caller that makes a batch ready (it filled it, or found every in-flight worker
  already waiting) closes it and runs ``predict_batch`` itself, in its own thread: no
  hand-off to a dispatcher thread, so no extra context switch on a GIL-bound two-core box.
  A waiting member closes it the same way when the wait deadline passes, or when woken by
  :meth:`leave` or :meth:`flush`. The others sleep on the batch's condition until the
  leader publishes every result, each to its own request object.
* A request is answered with ``None`` when the batcher decides the caller should predict
  by itself (a batch of one, a failed or malformed batch, a timeout, a full queue). The
  caller then calls ``model.predict`` exactly as it would without the batcher, so a model
  error surfaces in the caller's own thread, and nothing is computed twice.

Every wait is bounded (``max_wait`` while a batch is open, ``timeout`` while someone else
runs it or while the queue is full), so whatever the model does, only a thread that is
itself inside a model call can be held by the model.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sltrader_batching.config import BatchingConfig
from sltrader_batching.stats import LogHistogram
from sltrader_plugins import finite_number

log = logging.getLogger("sltrader_batching")

#: The oldest request waits for company at most this many times what one batch call
#: costs (measured, in CPU time), less what parking and waking a thread costs. Waiting
#: longer costs its worker more than the call the company would save; with a costly model
#: ``max_wait`` is the limit, with a cheap one requests are not parked on a timer at all.
WAIT_PER_CALL_COST = 4.0
#: What parking a caller on a condition and waking it costs, GIL hand-over included
#: (measured on the reference box: 50-100 µs under load).
PARK_COST_S = 100e-6
#: When the limit is zero, every this-many-th batch still waits ``max_wait``, so the cost
#: estimate keeps following a model that gets costlier (an online learner is trivially
#: cheap until its first update).
_PROBE_EVERY = 64
#: Batch calls measured before the cost estimate is trusted, and its smoothing.
_COST_WARMUP = 8
_COST_ALPHA = 0.05
#: In bypass, one single prediction in this many is timed, to notice a model that became
#: costly enough to batch again; one in ``_SAMPLE_EARLY`` until the estimate is trusted, so
#: a model that was cheap only before its first update (an online learner) is batched
#: again within a fraction of a scan.
_SAMPLE_EVERY = 64
_SAMPLE_EARLY = 8

#: Extra wait of a batch member that is not the batch's opener, past the batch deadline:
#: the opener closes the batch on time; this only matters if the opener cannot.
_BACKSTOP_S = 0.002

PredictBatch = Callable[[Sequence[np.ndarray]], Any]


class Reason(enum.Enum):
    """Why a batch was dispatched."""

    SIZE = "size"  #: it reached ``max_batch_size``
    WAIT = "wait"  #: its oldest request waited ``max_wait``
    IDLE = "idle"  #: every in-flight caller was inside the batcher: nobody else can come
    FLUSH = "flush"  #: the host asked (end of scan, shutdown)


class _State(enum.Enum):
    OPEN = 0
    RUNNING = 1
    DONE = 2


class _Request:
    __slots__ = ("done", "enqueued", "features", "result")

    def __init__(self, features: np.ndarray, enqueued: float) -> None:
        self.features = features
        self.enqueued = enqueued
        self.done = False
        # None until done; still None when done means "predict it yourself".
        self.result: float | None = None


class _Batch:
    __slots__ = (
        "cond",
        "deadline",
        "model",
        "overdue",
        "predict_batch",
        "requests",
        "started",
        "state",
        "wake",
    )

    def __init__(
        self,
        model: object,
        predict_batch: PredictBatch,
        deadline: float,
        cond: threading.Condition,
    ) -> None:
        self.model = model
        self.predict_batch = predict_batch
        self.deadline = deadline
        self.cond = cond
        self.requests: list[_Request] = []
        self.state = _State.OPEN
        self.started = 0.0
        self.wake: Reason | None = None  # set by leave()/flush(): close at once
        self.overdue = False


class BatchError(Exception):
    """``predict_batch`` returned anything but one finite real number per request."""


class MicroBatcher:
    """Collects concurrent single predictions into ``predict_batch`` calls.

    :param config: the knobs (sizes and waits).
    :param workers: how many threads may call :meth:`submit` at once. Used only when the
        caller never brackets its work with :meth:`enter`/:meth:`leave`; ``None`` then
        means "unknown" and batches close on size, wait or flush only.
    """

    def __init__(self, config: BatchingConfig, workers: int | None = None) -> None:
        self._config = config
        self._max_size = config.max_batch_size
        self._max_wait = config.max_wait_s
        self._timeout = config.timeout_s
        self._workers = workers
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # queue space freed
        self._drained = threading.Condition(self._lock)  # nobody inside any more
        self._open: dict[int, _Batch] = {}  # by id(model); the batch keeps the model alive
        self._in_flight = 0  # callers between enter() and leave()
        self._tracking = False  # enter() was called at least once
        self._inside = 0  # threads inside submit(), for close() to wait on
        # Callers inside submit() whose request is not answered yet. An answered caller is
        # about to return and could submit again, so it must not count towards "idle".
        self._waiting = 0
        self._queued = 0  # requests in batches not yet done (the bounded queue)
        self._overdue = 0  # running batches past the timeout: the model looks hung
        # The size of the first batch that overran the timeout, until its warning is
        # logged, which happens after the lock is released: a slow log handler must not
        # stall every worker at the moment the model already does.
        self._timeout_to_log: int | None = None
        self._closed = False
        self._no_batch_types: set[type] = set()
        self._batch_error_logged = False  # only the first failed batch is logged
        # counters (guarded by _lock)
        self._requests = 0
        self._batches = 0
        self._batched_requests = 0
        self._singles = 0
        self._reasons = dict.fromkeys(Reason, 0)
        self._fallbacks = 0
        self._batch_errors = 0
        self._timeouts = 0
        self._queue_full = 0
        self._bypassed = 0
        self._unbatchable = 0
        self._max_seen = 0
        self._waits = LogHistogram()
        self._call_cost = 0.0  # smoothed seconds per predict_batch call
        self._calls_timed = 0
        self._opened = 0  # batches not opened because the model is cheap, for probing
        # Bypass: the model is too cheap for any batch to pay, so the hooks return at once
        # and nothing is tracked. Read without the lock on the hot path; written only by
        # review(), at a scan boundary, when no caller is in flight.
        self.bypass = False
        self._single_cost = 0.0  # smoothed seconds per single predict, sampled in bypass
        self._singles_timed = 0
        self._passed = 0  # calls seen in bypass

    # -- in-flight tracking ----------------------------------------------------------

    def enter(self) -> None:
        """A caller started a unit of work that may :meth:`submit` (once or more)."""
        with self._lock:
            self._in_flight += 1
            self._tracking = True

    def leave(self) -> None:
        """That unit of work ended; it will not :meth:`submit` again."""
        with self._lock:
            if self._in_flight > 0:
                self._in_flight -= 1
            # One fewer caller to wait for: the open batches may now hold everyone left.
            if self._open:
                self._wake_if_idle()

    # -- the hot path ----------------------------------------------------------------

    def submit(self, model: object, features: np.ndarray) -> float | None:
        """Block until this request's prediction is known.

        :return: ``model.predict(features)`` as computed within a batch, or ``None``: the
            caller must call ``model.predict(features)`` itself (see the module docs).
        :raises BaseException: only what the model raised *in this thread* while it
            was the leader and the exception was not an ``Exception`` (e.g.
            ``KeyboardInterrupt``); followers are answered first.
        """
        predict_batch = getattr(model, "predict_batch", None)
        if not callable(predict_batch):
            self._note_unbatchable(model)
            return None
        timed_out: int | None = None
        with self._lock:
            self._requests += 1
            if self._closed or self._overdue:
                # Closed, or the model is stuck in a call past the timeout: feeding it more
                # batches would only park more workers behind it.
                self._bypassed += 1
                return None
            if id(model) not in self._open:
                # Kept allocation-free: a batch of one, answered by the caller's predict,
                # when nobody else can arrive (one worker) or when the model is too cheap
                # to be worth parking this caller for company.
                reason = Reason.IDLE if self._idle(1) else self._skip_wait()
                if reason is not None:
                    self._reasons[reason] += 1
                    self._singles += 1
                    self._waits.add(0.0)
                    return None
            self._inside += 1
            self._waiting += 1
            try:
                batch, request = self._join_and_wait(model, predict_batch, features)
            except BaseException:
                self._exit_locked()
                raise
            if batch is None:
                self._exit_locked()
                timed_out, self._timeout_to_log = self._timeout_to_log, None
        if batch is None:
            if timed_out is not None:
                log.warning(
                    "predict_batch of %d requests still running after %.0f ms; "
                    "its callers predict by themselves and batching is suspended until it "
                    "returns",
                    timed_out,
                    self._config.timeout_ms,
                )
            return None if request is None else request.result
        try:
            self._run(batch)
        finally:
            with self._lock:
                self._exit_locked()
        return request.result

    def _exit_locked(self) -> None:
        self._inside -= 1
        if self._closed and self._inside == 0:
            self._drained.notify_all()

    def _join_and_wait(
        self, model: object, predict_batch: PredictBatch, features: np.ndarray
    ) -> tuple[_Batch | None, _Request | None]:
        """Queue the request and wait (lock held). A returned batch is this thread's to run."""
        now = time.perf_counter()
        try:
            room = self._queued < self._config.queue_limit or self._wait_for_room(now)
        except BaseException:
            self._waiting -= 1
            raise
        if not room:
            self._waiting -= 1
            return None, None
        key = id(model)
        batch = self._open.get(key)
        opener = batch is None
        if batch is None:
            batch = _Batch(
                model, predict_batch, self._new_deadline(now), threading.Condition(self._lock)
            )
            self._open[key] = batch
        request = _Request(features, time.perf_counter())
        batch.requests.append(request)
        self._queued += 1
        try:
            return self._wait_for_turn(batch, request, opener)
        except BaseException:
            self._withdraw(batch, request)
            raise

    def _wait_for_room(self, now: float) -> bool:
        """Backpressure: wait until the queue has room; ``False`` after the timeout."""
        # This thread now waits inside the batcher too, which may complete an idle set.
        self._wake_if_idle()
        deadline = now + self._timeout
        while self._queued >= self._config.queue_limit:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._closed or self._overdue:
                self._queue_full += 1
                self._fallbacks += 1
                return False
            self._room.wait(remaining)
        return True

    def _wait_for_turn(
        self, batch: _Batch, request: _Request, opener: bool
    ) -> tuple[_Batch | None, _Request]:
        if len(self._open) > 1:
            # Our arrival may have completed the idle set for other models' batches too.
            self._wake_if_idle()
        while True:
            if request.done:
                return None, request
            now = time.perf_counter()
            if batch.state is _State.OPEN:
                reason: Reason | None
                if len(batch.requests) >= self._max_size:
                    reason = Reason.SIZE
                elif batch.wake is not None:
                    reason = batch.wake
                elif now >= batch.deadline:
                    reason = Reason.WAIT
                elif self._idle():
                    reason = Reason.IDLE
                else:
                    reason = None
                if reason is not None:
                    lead = self._close(batch, reason, now)
                    return (batch if lead else None), request
                timeout = batch.deadline - now + (0.0 if opener else _BACKSTOP_S)
                # The closer does not wake us when it starts the batch (that would cost a
                # context switch per member); waking by `timeout` at the latest keeps the
                # running batch's timeout honoured without it.
                timeout = min(timeout, self._timeout)
            else:  # RUNNING: someone else is in the model call
                remaining = batch.started + self._timeout - now
                if remaining <= 0:
                    self._abandon(batch, request)
                    return None, request
                timeout = remaining
            batch.cond.wait(timeout)

    def _withdraw(self, batch: _Batch, request: _Request) -> None:
        """The caller is leaving by an exception (lock held): drop or abandon its request."""
        if batch.state is _State.OPEN:
            batch.requests.remove(request)
            self._queued -= 1
            self._waiting -= 1
            self._room.notify()
            if not batch.requests and self._open.get(id(batch.model)) is batch:
                del self._open[id(batch.model)]
        elif not request.done:
            self._answer(request, None)  # its queue slot is freed when the batch ends

    def _abandon(self, batch: _Batch, request: _Request) -> None:
        """Give up on a batch that overran the timeout (lock held)."""
        self._answer(request, None)
        self._fallbacks += 1
        if not batch.overdue:
            batch.overdue = True
            self._overdue += 1
            self._timeouts += 1
            if self._timeouts == 1:  # logged once per batcher, by submit() once unlocked
                self._timeout_to_log = len(batch.requests)

    def _idle(self, arriving: int = 0) -> bool:
        """Every caller that could still submit is already inside (lock held)."""
        active = self._in_flight if self._tracking else self._workers
        return active is not None and self._waiting + arriving >= active

    def _wait_limit(self) -> float:
        """How long a new batch may wait for company (lock held)."""
        if self._calls_timed < _COST_WARMUP:
            return self._max_wait
        limit = WAIT_PER_CALL_COST * self._call_cost - PARK_COST_S
        if limit < PARK_COST_S:
            # Too short for anyone to join: every batch would close with one request,
            # which is never timed, so the estimate would freeze just above zero.
            return 0.0
        return min(self._max_wait, limit)

    def _skip_wait(self) -> Reason | None:
        """``WAIT`` when a new batch would not wait at all (lock held); probes excepted."""
        if self._wait_limit() > 0.0:
            return None
        self._opened += 1
        return None if self._opened % _PROBE_EVERY == 0 else Reason.WAIT

    def _new_deadline(self, now: float) -> float:
        limit = self._wait_limit()
        # A zero limit gets here only as a probe (see _skip_wait): measure with max_wait.
        return now + (limit if limit > 0.0 else self._max_wait)

    def _wake_if_idle(self) -> None:
        if not self._idle():
            return
        for batch in self._open.values():
            if batch.wake is None:
                batch.wake = Reason.IDLE
                # One member suffices: whoever wakes re-checks and closes the batch.
                batch.cond.notify()

    def _close(self, batch: _Batch, reason: Reason, now: float) -> bool:
        """Take ``batch`` out of the open set (lock held); ``True``: the caller runs it."""
        if self._open.get(id(batch.model)) is batch:
            del self._open[id(batch.model)]
        batch.state = _State.RUNNING
        batch.started = now
        self._reasons[reason] += 1
        requests = batch.requests
        for request in requests:
            self._waits.add(now - request.enqueued)
        size = len(requests)
        self._max_seen = max(self._max_seen, size)
        if size > 1 and not self._overdue:
            return True
        # A batch of one gains nothing over the caller's own predict; with a hung model
        # call pending, nobody should start another.
        if size == 1:
            self._singles += 1
        else:
            self._fallbacks += size
        self._finish(batch, None)
        return False

    def _answer(self, request: _Request, result: float | None) -> None:
        request.result = result
        request.done = True
        self._waiting -= 1

    def _finish(self, batch: _Batch, results: list[float] | None) -> None:
        """Publish results (``None``: everyone predicts alone) and wake the batch (lock held)."""
        for i, request in enumerate(batch.requests):
            if not request.done:
                self._answer(request, None if results is None else results[i])
        batch.state = _State.DONE
        if batch.overdue:
            self._overdue -= 1
        self._queued -= len(batch.requests)
        self._room.notify(len(batch.requests))
        batch.cond.notify_all()

    def _run(self, batch: _Batch) -> None:
        """Run the model for ``batch`` (lock not held) and publish the outcome."""
        size = len(batch.requests)
        results: list[float] | None = None
        error: Exception | None = None
        log_error = False
        # CPU time, not wall time: with 8 workers on 2 cores a call's wall time is mostly
        # waiting for the GIL, which says nothing about what the model costs.
        started = time.thread_time()
        elapsed = 0.0
        try:
            answers = batch.predict_batch([r.features for r in batch.requests])
            # The model's cost only: checking the answers is ours (and a Python loop, which
            # a tracer slows down enough to hide a cheap model).
            elapsed = time.thread_time() - started
            results = _check(answers, size)
        except Exception as exc:
            error = exc
        finally:
            # Also on KeyboardInterrupt and friends: the followers must never be left waiting.
            with self._lock:
                self._batches += 1
                self._batched_requests += size
                if results is None:
                    # The one fault path: the whole batch is handed back (see _check).
                    self._batch_errors += 1
                    self._fallbacks += sum(not r.done for r in batch.requests)
                    # Decided under the lock, so two leaders failing at once log one line;
                    # logged after it is released, so a slow handler stalls no other worker.
                    log_error = error is not None and not self._batch_error_logged
                    self._batch_error_logged |= log_error
                else:
                    self._note_call_cost(elapsed)
                self._finish(batch, results)
        if log_error:
            log.error(
                "predict_batch failed (%s: %s); each request of the batch is "
                "predicted singly by its caller (further failures are only counted)",
                type(error).__name__,
                error,
            )

    def _note_call_cost(self, seconds: float) -> None:
        self._calls_timed += 1
        if self._calls_timed == 1:
            self._call_cost = seconds
        else:
            # Smoothed, so a model that gets costlier (or cheaper) as it learns is followed.
            self._call_cost += _COST_ALPHA * (seconds - self._call_cost)

    # -- bypass for cheap models ------------------------------------------------------

    def sample_single(self, model: object, features: np.ndarray) -> float | None:
        """Bypass: let the caller predict, but time one call in ``_SAMPLE_EVERY`` here.

        :return: the timed prediction, or ``None`` (the caller predicts by itself; also
            when the sampled call raised, so the caller sees the model's error itself, or
            gave no finite number, which the hook may not return).
        """
        # Unlocked on purpose: a lost increment only shifts which call gets sampled, or
        # undercounts a metric by one.
        self._passed += 1
        every = _SAMPLE_EVERY if self._singles_timed >= _COST_WARMUP else _SAMPLE_EARLY
        if self._passed % every:
            return None
        started = time.thread_time()  # CPU time, as for batch calls
        try:
            result = model.predict(features)  # type: ignore[attr-defined]
        except Exception:
            return None
        elapsed = time.thread_time() - started
        with self._lock:
            self._singles_timed += 1
            if self._singles_timed == 1:
                self._single_cost = elapsed
            else:
                self._single_cost += _COST_ALPHA * (elapsed - self._single_cost)
        return finite_number(result)  # the same rule as for a batch's answers

    def review(self) -> bool:
        """At a scan boundary: bypass while the model is too cheap for batching to pay.

        Call only when no caller is between :meth:`enter` and :meth:`leave` (the host
        calls ``on_scan_complete`` after the scan's last ``after_analyze_symbol``).
        :return: whether the batcher is now in bypass.
        """
        message: str | None = None
        with self._lock:
            if self._inside or self._open:
                return self.bypass
            if self.bypass:
                cost = WAIT_PER_CALL_COST * self._single_cost - PARK_COST_S
                if self._singles_timed >= _COST_WARMUP and cost > 0.0:
                    self.bypass = False
                    self._in_flight = 0  # nobody was tracked while bypassed
                    self._calls_timed = 0  # measure batch calls afresh
                    message = "the model became costly enough to batch again"
            elif (
                self._in_flight == 0
                and self._calls_timed >= _COST_WARMUP
                and self._wait_limit() == 0.0
            ):
                self.bypass = True
                self._singles_timed = 0
                message = (
                    f"a batch call costs {self._call_cost * 1e6:.0f} µs, too little "
                    "for waiting to pay; predictions pass through until the model gets costlier"
                )
            bypass = self.bypass
        if message is not None:
            log.info(message)
        return bypass

    # -- lifecycle -------------------------------------------------------------------

    def flush(self) -> int:
        """Dispatch every open batch now; return how many requests they held."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        pending = 0
        for batch in self._open.values():
            pending += len(batch.requests)
            batch.wake = Reason.FLUSH
            batch.cond.notify()
        return pending

    def close(self, timeout: float | None = None) -> bool:
        """Stop batching: flush, pass every later call through, wait for callers to leave.

        :param timeout: the longest to wait for callers still inside (default: the
            configured timeout; open batches are flushed, so nobody waits for ``max_wait``).
        :return: ``True`` when no caller is inside any more.
        """
        if timeout is None:
            timeout = self._timeout
        with self._lock:
            self._closed = True
            self._flush_locked()
            self._room.notify_all()
            return self._drained.wait_for(lambda: self._inside == 0, timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reporting -------------------------------------------------------------------

    def check_model(self, model: object) -> bool:
        """``True`` when ``model`` can be batched; logs (once per type) when it cannot."""
        if callable(getattr(model, "predict_batch", None)):
            return True
        with self._lock:
            first = self._first_unbatchable_locked(type(model))
        if first:
            _log_unbatchable(type(model))
        return False

    def _note_unbatchable(self, model: object) -> None:
        with self._lock:
            self._requests += 1
            self._unbatchable += 1
            first = self._first_unbatchable_locked(type(model))
        if first:
            _log_unbatchable(type(model))

    def _first_unbatchable_locked(self, kind: type) -> bool:
        first = kind not in self._no_batch_types
        self._no_batch_types.add(kind)
        return first

    def metrics(self) -> dict[str, float]:
        """A snapshot of the counters (names without the plugin prefix)."""
        with self._lock:
            return {
                "requests": float(self._requests + self._passed),
                "passed_through": float(self._passed),
                "batches": float(self._batches),
                "batched_requests": float(self._batched_requests),
                "mean_batch_size": (
                    self._batched_requests / self._batches if self._batches else 0.0
                ),
                "max_batch_size_seen": float(self._max_seen),
                "singles": float(self._singles),
                **{f"dispatch_{reason.value}": float(n) for reason, n in self._reasons.items()},
                "fallbacks": float(self._fallbacks),
                "batch_errors": float(self._batch_errors),
                "timeouts": float(self._timeouts),
                "queue_full": float(self._queue_full),
                "bypassed": float(self._bypassed),
                "unbatchable": float(self._unbatchable),
                "wait_p50_ms": self._waits.quantile(0.50) * 1000.0,
                "wait_p99_ms": self._waits.quantile(0.99) * 1000.0,
                "wait_mean_ms": self._waits.mean * 1000.0,
                "wait_max_ms": self._waits.max * 1000.0,
                "wait_limit_ms": self._wait_limit() * 1000.0,
                "batch_call_ms": self._call_cost * 1000.0,
                "single_call_ms": self._single_cost * 1000.0,
                "bypass": float(self.bypass),
            }


def _log_unbatchable(kind: type) -> None:
    log.warning(
        "model %s.%s has no predict_batch; its calls pass through unbatched",
        kind.__module__,
        kind.__qualname__,
    )


def _check(raw: object, size: int) -> list[float]:
    """``raw`` as ``size`` floats; :class:`BatchError` unless it is a sequence (or 1-D
    array) of exactly ``size`` finite real numbers (see :func:`_number`).

    All or nothing: a batch call that answers NaN, ``None`` or a bool for one request has
    gone wrong, so none of its answers is trusted; every caller predicts by itself and gets
    the model's own value (or error), as without the plugin.
    """
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1:
            raise BatchError(f"predict_batch returned an array of shape {raw.shape}")
        raw = raw.tolist()  # numbers become Python numbers, numpy bools Python bools
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes, bytearray)):
        raise BatchError(f"predict_batch returned a {type(raw).__name__}, not a sequence")
    if len(raw) != size:
        raise BatchError(f"predict_batch returned {len(raw)} results for {size} requests")
    values: list[float] = []
    for value in raw:
        number = finite_number(value)
        if number is None:
            raise BatchError(f"predict_batch returned {value!r}, not a finite number")
        values.append(number)
    return values
