"""A thread-safe micro-batcher for blocking callers, independent of pluggy.

Design (leader/follower; a model thread only with a CPU for each worker):

* Each model has a *lane*: its open batch (collecting requests) and the batch now in a
  model call. One call runs at a time per model (a full batch goes regardless): requests
  that arrive meanwhile queue in the open batch.
* A request with nobody to batch with (the model free, nothing queued for it, no other
  caller that could still submit: one worker, the tail of a scan) is handed back at once:
  its caller predicts by itself, as without the batcher.
* A batch on a free model waits for company only while that pays: until every caller
  that could still submit is waiting (``idle``), the batch is full, or nobody joined for
  the *wait limit* (never longer than ``max_wait`` in all). While callers keep coming they
  are busy building their features, so waiting for them costs no CPU. A batch that queued
  behind a call waits the same way from the moment the call returns: the callers it
  answered are about to come back, and a model call overlapping their feature building
  runs slower. The limit follows the model's measured cost; for a model too cheap to wait
  for it is zero and requests run at once, side by side, as they would without the batcher.
* A caller gone outside the batcher for a while (an exchange request, :meth:`away`) is
  not waited for until it is back.
* The caller that dispatches a batch runs ``predict_batch`` itself, in its own thread (a
  batch of one included: every call is timed, so the cost estimate follows the model).
  The others sleep, each on a condition of its own, until it publishes every result to
  its own request object.
* Unless the workers are no more than the CPUs: then a batch of two or more runs on the
  batcher's *model thread* (one, started at the first such batch) and every member
  sleeps. With a CPU for each worker, one thread making every call runs the calls and the
  workers' feature building faster than workers taking turns; with more workers than
  CPUs, the hand-over's two extra wake-ups cost more than that (docs/batching.md, "Who
  runs the model").
* A request is answered with ``None`` when it was alone (above), the batch failed, timed
  out or the batcher is closed: the caller then calls ``model.predict`` exactly as it
  would without the batcher, so a model error surfaces in the caller's own thread.

Every wait is bounded (``max_wait`` while the model is free, ``timeout`` while a model
call runs), so whatever the model does, only a thread that is itself inside a model call
can be held by the model: a leader, or the model thread.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sltrader_batching.config import BatchingConfig
from sltrader_batching.stats import LogHistogram
from sltrader_plugins import DaemonThreads, Tally, finite_number

log = logging.getLogger("sltrader_batching")

#: A batch waits for its next member at most this many times what one model call costs
#: (measured, in CPU time), less what parking and waking a thread costs. Waiting longer
#: costs its worker more than the call the company would save.
WAIT_PER_CALL_COST = 4.0
#: What parking a caller on a condition and waking it costs, GIL hand-over included
#: (docs/batching.md has the measurement). A model whose wait limit comes
#: out below this is too cheap to wait for: its requests run at once.
PARK_COST_S = 100e-6
#: Calls measured before the cost estimate is trusted, and its smoothing.
_COST_WARMUP = 8
_COST_ALPHA = 0.05
#: Extra wait of a batch member that is not the batch's opener, past the batch's cap:
#: the opener closes the batch on time; this only matters if the opener cannot.
_BACKSTOP_S = 0.002

PredictBatch = Callable[[Sequence[np.ndarray]], Any]


class Reason(enum.Enum):
    """Why a batch was dispatched."""

    SIZE = "size"  #: it reached ``max_batch_size``
    WAIT = "wait"  #: nobody joined for the wait limit, or it waited max_wait in all
    IDLE = "idle"  #: every caller that could still submit was waiting: nobody else can come
    CHEAP = "cheap"  #: the model is too cheap to wait for: run at once
    FLUSH = "flush"  #: the host asked (end of scan, shutdown)


class _State(enum.Enum):
    OPEN = 0
    RUNNING = 1
    DONE = 2


class _Request:
    __slots__ = ("done", "enqueued", "features", "result", "wakeup")

    def __init__(self, features: np.ndarray, enqueued: float) -> None:
        self.features = features
        self.enqueued = enqueued
        self.done = False
        # None until done; still None when done means "predict it yourself".
        self.result: float | None = None
        # Set when its caller parks: each caller sleeps on a condition of its own, so a
        # wake-up reaches exactly the thread it is meant for.
        self.wakeup: threading.Condition | None = None

    def notify(self) -> None:
        """Wake its caller, if parked (the batcher's lock held)."""
        if self.wakeup is not None:
            self.wakeup.notify()


class _Batch:
    __slots__ = (
        "cap",
        "deadline",
        "lane",
        "opener",
        "overdue",
        "requests",
        "started",
        "state",
        "wake",
    )

    def __init__(self, lane: _Lane, opener: _Request) -> None:
        self.lane = lane
        # Dispatched on WAIT at ``deadline``: the wait limit after the last request joined,
        # never past ``cap`` (``max_wait`` after it opened, or after its model became free).
        # Both are set by MicroBatcher._start_clock when the batch starts waiting.
        self.deadline = 0.0
        self.cap = 0.0
        # The member that keeps the batch's time and gets its wake-ups (idle, flush, the
        # model becoming free); the others wake only when their results are published.
        self.opener = opener
        self.requests: list[_Request] = [opener]
        self.state = _State.OPEN
        self.started = 0.0
        self.wake: Reason | None = None  # set when it turns idle, or is flushed
        self.overdue = False


class _Caller(threading.local):
    """What the batcher knows of the calling thread (each thread sees its own)."""

    inside = False  # between enter() and leave()
    away = False  # inside, and gone outside the batcher (see MicroBatcher.away)


class _Lane:
    """One model's batches: the open one and those in a model call (guarded by the lock)."""

    __slots__ = ("model", "open", "predict_batch", "running")

    def __init__(self, model: object, predict_batch: PredictBatch) -> None:
        self.model = model  # kept alive while the lane exists, so its id stays unique
        self.predict_batch = predict_batch
        self.open: _Batch | None = None
        self.running: list[_Batch] = []  # oldest first; more than one only on SIZE or CHEAP


class BatchError(Exception):
    """``predict_batch`` returned anything but one finite real number per request."""


class MicroBatcher:
    """Collects concurrent single predictions into ``predict_batch`` calls.

    :param config: the knobs (sizes and waits).
    :param workers: how many threads may call :meth:`submit` at once. It picks who runs
        the model (see the module docs; ``None``: the leader), and, when the caller never
        brackets its work with :meth:`enter`/:meth:`leave`, it is who can still submit
        (``None`` then means "unknown" and batches close on size, wait, a returning call or
        flush only).
    """

    def __init__(self, config: BatchingConfig, workers: int | None = None) -> None:
        self._config = config
        self._max_size = config.max_batch_size
        self._max_wait = config.max_wait_s
        self._timeout = config.timeout_s
        self._workers = workers
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # nobody inside any more
        self._lanes: dict[int, _Lane] = {}  # by id(model); idle lanes are dropped
        self._in_flight = 0  # callers between enter() and leave()
        self._away = 0  # of those, callers gone outside the batcher (away())
        self._caller = _Caller()
        self._not_started = 0  # units of work of the current scan not entered yet
        self._tracking = False  # enter() was called at least once
        self._inside = 0  # threads inside submit(), for close() to wait on
        # Callers inside submit() whose request is not answered yet. An answered caller is
        # about to return and could submit again, so it must not count towards "idle".
        self._waiting = 0
        self._overdue = 0  # running batches past the timeout: the model looks hung
        # The size of the first batch that overran the timeout, until its warning is
        # logged, which happens after the lock is released: a slow log handler must not
        # stall every worker at the moment the model already does.
        self._timeout_to_log: int | None = None
        self._closed = False
        self._unbatchable_types = Tally()  # logged once each
        self._failed_batches = Tally()  # only the first failed batch is logged
        # counters (guarded by _lock)
        self._requests = 0
        self._batches = 0  # predict_batch calls, batches of one included
        self._batched_requests = 0
        self._singles = 0  # predict_batch calls with one request
        self._reasons = dict.fromkeys(Reason, 0)
        self._fallbacks = 0
        self._batch_errors = 0
        self._timeouts = 0
        self._bypassed = 0
        self._alones = 0  # requests with nobody to batch with, predicted by their caller
        self._unbatchable = 0
        self._max_seen = 0
        self._waits = LogHistogram()
        self._call_cost = 0.0  # smoothed CPU seconds per predict_batch call
        self._calls_timed = 0
        # Decided once: the workers and the CPUs do not change while the batcher lives.
        # Its backlog holds only dispatched batches, each with two or more callers parked
        # on it, so it never holds more batches than there are callers.
        self._model_thread = (
            DaemonThreads("sltrader-batching-model", limit=1, backlog=workers)
            if workers is not None and 2 <= workers <= _usable_cpus()
            else None
        )

    # -- in-flight tracking ----------------------------------------------------------

    def begin_scan(self, units: int) -> None:
        """A scan of ``units`` units of work (symbols) starts, each bracketed by
        :meth:`enter`/:meth:`leave`.

        Optional. It tells the batcher that a worker between two units of work is coming
        back: without it, a worker counts only while inside a unit, and one that is busy
        taking its next unit (waiting for the GIL, with many workers) looks gone, so
        batches close with whoever happens to be waiting.
        """
        with self._lock:
            self._not_started = max(0, units)
            self._tracking = True

    def enter(self) -> None:
        """A caller started a unit of work that may :meth:`submit` (once or more)."""
        self._caller.inside = True
        with self._lock:
            self._in_flight += 1
            if self._not_started > 0:
                self._not_started -= 1
            self._tracking = True

    def leave(self) -> None:
        """That unit of work ended; it will not :meth:`submit` again."""
        caller = self._caller
        caller.inside = False
        with self._lock:
            self._back_locked(caller)
            if self._in_flight > 0:
                self._in_flight -= 1
            # One fewer caller to wait for: the open batches may now hold everyone left.
            self._wake_if_idle()

    def away(self) -> None:
        """The calling thread, inside a unit of work, is about to block outside the
        batcher (an exchange request): until it is :meth:`back`, or its next
        :meth:`submit` or :meth:`leave`, batches do not wait for it.

        Optional; a no-op outside :meth:`enter`/:meth:`leave`. Without it a batch waits
        for a caller stuck in a request of milliseconds until its wait limit runs out.
        """
        caller = self._caller
        if not caller.inside or caller.away:
            return
        caller.away = True
        with self._lock:
            self._away += 1
            self._wake_if_idle()  # the callers left may all be waiting already

    def back(self) -> None:
        """The calling thread's request (see :meth:`away`) returned: it is coming again,
        busy with its features, and worth waiting for."""
        caller = self._caller
        if caller.away:
            with self._lock:
                self._back_locked(caller)

    def _back_locked(self, caller: _Caller) -> None:
        if caller.away:
            caller.away = False
            self._away -= 1

    # -- the hot path ----------------------------------------------------------------

    def submit(self, model: object, features: np.ndarray) -> float | None:
        """Block until this request's prediction is known.

        :return: ``model.predict(features)`` as computed within a batch, or ``None``: the
            caller must call ``model.predict(features)`` itself (see the module docs).
        :raises BaseException: only what the model raised *in this thread* (the
            batch's leader, or alone in its batch) that is not an ``Exception`` (e.g.
            ``KeyboardInterrupt``); the batch's other members are answered first.
        """
        predict_batch = getattr(model, "predict_batch", None)
        if not callable(predict_batch):
            self._note_unbatchable(model)
            return None
        timed_out: int | None = None
        caller = self._caller
        with self._lock:
            self._back_locked(caller)
            self._requests += 1
            if self._closed or self._overdue:
                # Closed, or the model is stuck in a call past the timeout: feeding it more
                # batches would only park more workers behind it.
                self._bypassed += 1
                return None
            if self._alone(model):
                # Nobody to batch with (one worker, the tail of a scan) and the model is
                # free: the caller predicts by itself, as without the batcher, and pays for
                # none of the batching machinery.
                self._alones += 1
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
            return request.result
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
    ) -> tuple[_Batch | None, _Request]:
        """Queue the request and wait (lock held). A returned batch is this thread's to run."""
        now = time.perf_counter()
        key = id(model)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(model, predict_batch)
        request = _Request(features, now)
        batch = lane.open
        if batch is None:
            if self._wait_limit() == 0.0:
                # A model too cheap to wait for: run at once, without parking this caller
                # (as a timed batch of one, so the cost estimate keeps following the model).
                if len(self._lanes) > 1:
                    self._wake_if_idle()  # our arrival may complete other models' idle set
                batch = _Batch(lane, request)
                return (batch if self._close(batch, Reason.CHEAP, now) else None), request
            batch = lane.open = _Batch(lane, request)
            self._start_clock(batch, now)
        else:
            batch.requests.append(request)
            # Company is still coming: the wait limit counts from the latest arrival. Never
            # earlier than before (the opener sleeps until the deadline it last saw).
            batch.deadline = max(batch.deadline, min(now + self._wait_limit(), batch.cap))
        request.wakeup = threading.Condition(self._lock)
        try:
            to_run, request = self._wait_for_turn(batch, request, request.wakeup)
            if (
                to_run is None
                or len(to_run.requests) == 1
                or self._model_thread is None
                # (never: the backlog holds a batch per two callers) no room: ours to run
                or self._model_thread.start(self._run, to_run) is None
            ):
                return to_run, request  # ours to run (or answered)
            # A batch with company, on the model thread: we wait like the others.
            return self._wait_for_turn(to_run, request, request.wakeup)
        except BaseException:
            self._withdraw(batch, request)
            raise

    def _wait_for_turn(
        self, batch: _Batch, request: _Request, wakeup: threading.Condition
    ) -> tuple[_Batch | None, _Request]:
        # Our arrival may have completed the idle set. Our own batch we check ourselves,
        # below: waking its opener would only have it re-check and park again, a context
        # switch during the model call we are about to run.
        self._wake_if_idle(own=batch)
        while True:
            if request.done:
                return None, request
            now = time.perf_counter()
            if batch.state is _State.OPEN:
                reason = self._ready(batch, now)
                if reason is not None:
                    return (batch if self._close(batch, reason, now) else None), request
                running = batch.lane.running
                if running:
                    # Queued behind the model's call: its end wakes our opener;
                    # past the timeout the call looks hung and we stop waiting for it.
                    remaining = running[0].started + self._timeout - now
                    if remaining <= 0:
                        self._mark_overdue(running[0])
                        continue  # _ready() now hands the batch back
                    timeout = remaining
                elif batch.opener is request:
                    timeout = batch.deadline - now
                else:  # the opener keeps the (moving) deadline; the cap does not move
                    timeout = batch.cap + _BACKSTOP_S - now
            else:  # RUNNING: another thread (the leader, the model thread) is in the call
                remaining = batch.started + self._timeout - now
                if remaining <= 0:
                    self._abandon(batch, request)
                    return None, request
                timeout = remaining
            # Nobody wakes the members when the batch starts (that would
            # cost a context switch each); they wake when it publishes, or by the timeout.
            wakeup.wait(min(timeout, self._timeout))

    def _ready(self, batch: _Batch, now: float) -> Reason | None:
        """Why the open ``batch`` should be dispatched now, if it should (lock held)."""
        if len(batch.requests) >= self._max_size:
            return Reason.SIZE
        if self._overdue or self._closed:
            return Reason.FLUSH  # handed back by _close()
        if batch.lane.running:
            return None  # the model is busy: the batch goes when its call returns
        if batch.wake is not None:
            return batch.wake
        if now >= batch.deadline:
            return Reason.WAIT
        if self._idle():
            return Reason.IDLE
        return None

    def _withdraw(self, batch: _Batch, request: _Request) -> None:
        """The caller is leaving by an exception (lock held): drop or abandon its request."""
        if batch.state is _State.OPEN:
            batch.requests.remove(request)
            self._waiting -= 1
            if batch.requests:
                if batch.opener is request:  # someone else keeps the batch's time now
                    batch.opener = batch.requests[0]
                    batch.opener.notify()
            elif batch.lane.open is batch:
                batch.lane.open = None
                self._drop_if_unused(batch.lane)
        elif not request.done:
            self._answer(request, None)

    def _abandon(self, batch: _Batch, request: _Request) -> None:
        """Give up on a batch that overran the timeout (lock held)."""
        self._answer(request, None)
        self._fallbacks += 1
        self._mark_overdue(batch)

    def _mark_overdue(self, batch: _Batch) -> None:
        if not batch.overdue:
            batch.overdue = True
            self._overdue += 1
            self._timeouts += 1
            if self._timeouts == 1:  # logged once per batcher, by submit() once unlocked
                self._timeout_to_log = len(batch.requests)

    def _alone(self, model: object) -> bool:
        """A request for ``model`` now has nobody to batch with (lock held): the model is
        free, nothing is queued for it, and no other caller could still submit."""
        lane = self._lanes.get(id(model))
        if lane is not None and (lane.open is not None or lane.running):
            return False
        if not self._idle(arriving=1):
            return False
        # Nobody else can come: other models' open batches on free models cannot grow.
        self._wake_idle_batches()
        return True

    def _idle(self, arriving: int = 0) -> bool:
        """Every caller that could still submit is already inside, counting ``arriving``
        callers not yet counted as waiting (lock held)."""
        waiting = self._waiting + arriving
        if not self._tracking:
            return self._workers is not None and waiting >= self._workers
        coming = self._in_flight + self._not_started
        if self._workers is not None:
            coming = min(coming, self._workers)
        return waiting >= coming - self._away

    def _wait_limit(self) -> float:
        """How long a batch may wait for company while its model is free (lock held)."""
        if self._calls_timed < _COST_WARMUP:
            return self._max_wait
        limit = WAIT_PER_CALL_COST * self._call_cost - PARK_COST_S
        return min(self._max_wait, limit) if limit >= PARK_COST_S else 0.0

    def _start_clock(self, batch: _Batch, now: float) -> None:
        """``batch`` starts waiting for company on a free model (lock held): when it
        opens, or when the call it queued behind returns."""
        batch.cap = now + self._max_wait
        batch.deadline = now + self._wait_limit()

    def _wake_if_idle(self, own: _Batch | None = None) -> None:
        if self._idle():
            self._wake_idle_batches(own)

    def _wake_idle_batches(self, own: _Batch | None = None) -> None:
        """Wake every open batch on a free model but ``own``: nobody else can join them
        (lock held)."""
        for lane in self._lanes.values():
            batch = lane.open
            if batch is not None and batch is not own and batch.wake is None and not lane.running:
                self._wake(batch, Reason.IDLE)

    def _wake(self, batch: _Batch, reason: Reason) -> None:
        batch.wake = reason
        batch.opener.notify()  # it re-checks and closes the batch

    def _close(self, batch: _Batch, reason: Reason, now: float) -> bool:
        """Move ``batch`` from open to running (lock held); ``True``: it is to be run (by
        the caller, or handed to the model thread)."""
        lane = batch.lane
        if lane.open is batch:
            lane.open = None
        batch.state = _State.RUNNING
        batch.started = now
        self._reasons[reason] += 1
        requests = batch.requests
        for request in requests:
            self._waits.add(now - request.enqueued)
        if not self._overdue and not self._closed:
            lane.running.append(batch)
            return True
        # With a hung model call pending (or the batcher closed), nobody starts another.
        self._fallbacks += len(requests)
        self._finish(batch, None)
        return False

    def _answer(self, request: _Request, result: float | None) -> None:
        request.result = result
        request.done = True
        self._waiting -= 1
        request.notify()  # a no-op for the leader, which answers its own request

    def _finish(self, batch: _Batch, results: list[float] | None) -> None:
        """Publish results (``None``: everyone predicts alone) and wake the batch (lock held)."""
        for i, request in enumerate(batch.requests):
            if not request.done:
                self._answer(request, None if results is None else results[i])
        batch.state = _State.DONE
        if batch.overdue:
            self._overdue -= 1
        lane = batch.lane
        if batch in lane.running:
            lane.running.remove(batch)
            queued = lane.open
            if not lane.running and queued is not None:
                # The model is free. The batch that queued behind its call now waits for
                # company like any batch on a free model, from now: the callers this call
                # just answered come back with their next requests soon, and a model call
                # overlapping their feature building runs slower (docs/batching.md).
                self._start_clock(queued, time.perf_counter())
                queued.opener.notify()
        self._drop_if_unused(lane)

    def _drop_if_unused(self, lane: _Lane) -> None:
        if lane.open is None and not lane.running:
            # A lane holds its model alive; drop it so a replaced model can be freed.
            self._lanes.pop(id(lane.model), None)

    def _run(self, batch: _Batch) -> None:
        """Run the model for ``batch`` (lock not held) and publish the outcome."""
        size = len(batch.requests)
        results: list[float] | None = None
        error: Exception | None = None
        log_error = False
        # CPU time, not wall time: with more workers than cores a call's wall time is mostly
        # waiting for the GIL, which says nothing about what the model costs.
        started = time.thread_time()
        elapsed = 0.0
        try:
            answers = batch.lane.predict_batch([r.features for r in batch.requests])
            # The model's cost only: checking the answers is ours.
            elapsed = time.thread_time() - started
            results = _check(answers, size)
        except Exception as exc:
            error = exc
        finally:
            # Also on KeyboardInterrupt and friends: no member may be left waiting.
            with self._lock:
                self._batches += 1
                self._batched_requests += size
                self._singles += size == 1
                self._max_seen = max(self._max_seen, size)
                if results is None:
                    # The one fault path: the whole batch is handed back (see _check).
                    self._batch_errors += 1
                    self._fallbacks += sum(not r.done for r in batch.requests)
                    # Decided under the lock, so two calls failing at once log one line;
                    # logged after it is released, so a slow handler stalls no other worker.
                    log_error = error is not None and self._failed_batches.add()
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

    # -- lifecycle -------------------------------------------------------------------

    def flush(self) -> int:
        """Dispatch every open batch now; return how many requests they held."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        self._not_started = 0  # the scan is over, whatever it did not start
        pending = 0
        for lane in self._lanes.values():
            if lane.open is not None:
                pending += len(lane.open.requests)
                self._wake(lane.open, Reason.FLUSH)
        return pending

    def close(self, timeout: float | None = None) -> bool:
        """Stop batching: flush, pass every later call through, wait for callers to leave.

        :param timeout: the longest to wait for callers still inside (default: the
            configured timeout; open batches are flushed, so nobody waits for ``max_wait``).
        :return: ``True`` when no caller is inside any more and no model call runs.
        """
        if timeout is None:
            timeout = self._timeout
        deadline = time.perf_counter() + timeout
        with self._lock:
            self._closed = True
            self._flush_locked()
            drained = self._drained.wait_for(lambda: self._inside == 0, timeout)
        # Closed, nobody hands it another batch; a hung call keeps it (a daemon) alive.
        if self._model_thread is None:
            return drained
        # After the batches it holds; a hung call keeps it (a daemon) alive.
        left = deadline - time.perf_counter()
        return self._model_thread.stop(max(left, 1e-6)) and drained

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reporting -------------------------------------------------------------------

    def check_model(self, model: object) -> bool:
        """``True`` when ``model`` can be batched; logs (once per type) when it cannot."""
        if callable(getattr(model, "predict_batch", None)):
            return True
        if self._unbatchable_types.add(type(model)):
            _log_unbatchable(type(model))
        return False

    def _note_unbatchable(self, model: object) -> None:
        with self._lock:
            self._requests += 1
            self._unbatchable += 1
        if self._unbatchable_types.add(type(model)):
            _log_unbatchable(type(model))

    def metrics(self) -> dict[str, float]:
        """A snapshot of the counters (names without the plugin prefix)."""
        with self._lock:
            return {
                "requests": float(self._requests),
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
                "bypassed": float(self._bypassed),
                "alone": float(self._alones),
                "unbatchable": float(self._unbatchable),
                "wait_p50_ms": self._waits.quantile(0.50) * 1000.0,
                "wait_p99_ms": self._waits.quantile(0.99) * 1000.0,
                "wait_mean_ms": self._waits.mean * 1000.0,
                "wait_max_ms": self._waits.max * 1000.0,
                "wait_limit_ms": self._wait_limit() * 1000.0,
                "call_ms": self._call_cost * 1000.0,
            }


def _usable_cpus() -> int:
    """How many CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on macOS and Windows
        return os.cpu_count() or 1


def _log_unbatchable(kind: type) -> None:
    log.warning(
        "model %s.%s has no predict_batch; its calls pass through unbatched",
        kind.__module__,
        kind.__qualname__,
    )


def _check(raw: object, size: int) -> list[float]:
    """``raw`` as ``size`` floats; :class:`BatchError` unless it is a sequence (or 1-D
    array) of exactly ``size`` finite real numbers (see :func:`finite_number`).

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
