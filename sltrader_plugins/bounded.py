"""``DaemonThreads``: calls on daemon threads, each waited for at most a bound.

The one mechanism for work a thread must not be stalled by: a plugin's main-loop hook
(the manager), a fetch with a deadline (``SingleFlightCache(fetch_timeout_s=...)``), a
warmer's prefetches. A call that overruns its waiter's bound is abandoned, not cancelled
(Python cannot stop a thread): it runs on and keeps its thread, and its place among the
``limit`` threads, until it returns. So a hung callee holds at most ``limit`` threads,
however often it is called, and never more work piles up behind it. The threads are
daemons: a call that never returns cannot keep the process from exiting.

A thread that finishes a call waits for the next one (for ``idle_s`` at most, then ends),
so a call that runs every cycle does not pay a thread's start. A call is handed over
with locks used as binary semaphores, not a queue and a future: the manager pays the
hand-over both ways on every main-loop hook call of every plugin.
"""

from __future__ import annotations

import collections
import enum
import math
import threading
import time
from collections.abc import Callable
from typing import Any


class Outcome(enum.Enum):
    """What became of a call waited for at most a bound (:meth:`DaemonThreads.call`)."""

    DONE = "done"  #: the call returned or raised within the bound
    OVERRAN = "overran"  #: still running at the bound: abandoned
    BUSY = "busy"  #: not started: every thread is held by a call (an abandoned one)


class Call:
    """One call handed to :class:`DaemonThreads`: wait for it, then take its outcome."""

    __slots__ = ("_args", "_done", "_ended", "_error", "_function", "_kwargs", "_result")

    def __init__(
        self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._function, self._args, self._kwargs = function, args, kwargs
        self._result: Any = None
        self._error: BaseException | None = None
        self._ended = False
        self._done = threading.Lock()
        self._done.acquire()

    def wait(self, timeout: float) -> bool:
        """Whether the call has ended, waiting at most ``timeout`` seconds (0: not at all).

        Any number of waits, from any threads: once ended, each answers ``True`` at once.
        """
        if self._ended:
            return True
        if timeout > 0:
            ended = self._done.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        else:
            ended = self._done.acquire(blocking=False)
        if ended:
            self._done.release()  # for the next wait, here or in another thread
        return ended

    def result(self) -> Any:
        """The ended call's result; raises what it raised."""
        if self._error is not None:
            raise self._error
        return self._result

    def run(self) -> None:
        """Make the call (on the thread it was handed to); keep what it returned or raised."""
        try:
            self._result = self._function(*self._args, **self._kwargs)
        except BaseException as exc:  # handed to the waiter, which decides
            self._error = exc
        finally:
            self._function, self._args, self._kwargs = _ended, (), {}  # nothing outlives it

    def ended(self) -> None:
        """Tell the waiter (if any still waits) that the call has ended."""
        self._ended = True
        self._done.release()


def _ended() -> None:
    raise RuntimeError("a call runs once")


class _Thread:
    """One daemon thread of a :class:`DaemonThreads`: ``go`` is released when a call is
    in ``call`` (``None``: end the thread)."""

    __slots__ = ("call", "go")

    def __init__(self) -> None:
        self.call: Call | None = None
        self.go = threading.Lock()
        self.go.acquire()

    def hand(self, call: Call | None) -> None:
        self.call = call
        self.go.release()


class DaemonThreads:
    """At most ``limit`` daemon threads running calls, abandoned ones included.

    Thread-safe: any thread may start calls and stop it.

    :param name: the threads' name.
    :param limit: the most calls running at once.
    :param idle_s: how long a thread waits for its next call before it ends
        (``math.inf``: until :meth:`stop`).
    :param backlog: the most calls that wait for a thread while ``limit`` run; each
        starts, in order, when a thread is free (0: a call starts at once or not at all).
    """

    def __init__(self, name: str, limit: int, idle_s: float = math.inf, backlog: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if backlog < 0:
            raise ValueError(f"backlog must be at least 0, got {backlog}")
        if not idle_s > 0:  # NaN too: a thread could not wait for its next call
            raise ValueError(f"idle_s must be above 0, got {idle_s}")
        self.name = name
        self.limit = limit
        self.idle_s = idle_s
        self.backlog = backlog
        # -1: Lock.acquire's "forever" (it refuses longer than TIMEOUT_MAX)
        self._wait = -1.0 if idle_s > threading.TIMEOUT_MAX else idle_s
        self._lock = threading.Lock()
        self._idle: list[_Thread] = []
        self._waiting: collections.deque[Call] = collections.deque()
        self._running = 0  # calls running (each on a thread of its own)
        # Threads not known to have exited, for stop() to join; pruned at each start, so
        # at most ``limit`` plus those on their way out.
        self._threads: set[threading.Thread] = set()
        self._stopped = False

    @property
    def running(self) -> int:
        """Calls running now, abandoned ones included."""
        with self._lock:
            return self._running

    def start(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Call | None:
        """Start ``function(*args, **kwargs)`` on a thread, or put it in the backlog;
        ``None`` when ``limit`` calls run and the backlog is full.

        :raises RuntimeError: no thread could be started (the system's limit).
        """
        call = Call(function, args, kwargs)
        with self._lock:
            if self._running >= self.limit:
                if len(self._waiting) >= self.backlog:
                    return None
                self._waiting.append(call)
                return call
            self._running += 1
            thread = self._idle.pop() if self._idle else None
            if thread is None:
                thread = _Thread()
                os_thread = threading.Thread(
                    target=self._serve, args=(thread,), name=self.name, daemon=True
                )
                try:
                    os_thread.start()  # under the lock: no one sees it unstarted
                except BaseException:
                    self._running -= 1
                    raise
                self._threads = {t for t in self._threads if t.is_alive()}
                self._threads.add(os_thread)
        thread.hand(call)
        return call

    def call(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: float,
    ) -> tuple[Outcome, Any]:
        """Run ``function(*args, **kwargs)`` and wait for it at most ``bound`` seconds.

        :return: the outcome, and the call's result when it is ``DONE`` (else ``None``).
        :raises: what the call raised, when it ended within the bound.
        """
        call = self.start(function, *args, **kwargs)
        if call is None:
            return Outcome.BUSY, None
        if not call.wait(bound):
            return Outcome.OVERRAN, None
        return Outcome.DONE, call.result()

    def stop(self, timeout: float = 0.0) -> bool:
        """End the idle threads now and each running one once it has run the backlog;
        wait at most ``timeout`` seconds for every thread to end (0: not at all).

        A later call runs on a thread that ends with it.

        :return: whether every thread has ended.
        """
        deadline = time.monotonic() + min(timeout, threading.TIMEOUT_MAX)
        with self._lock:
            self._stopped = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for thread in idle:
            thread.hand(None)
        me = threading.current_thread()
        for os_thread in threads:
            if os_thread is not me:
                os_thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)

    def _serve(self, thread: _Thread) -> None:
        call = self._next(thread)
        while call is not None:
            call.run()
            following = self._returned(thread)
            call.ended()
            call = following  # an idle thread holds no result (a series, say) alive
            if call is None:
                call = self._next(thread)

    def _next(self, thread: _Thread) -> Call | None:
        """The call handed to idle ``thread``; ``None``: it ends (stopped, or idle too long)."""
        while not thread.go.acquire(timeout=self._wait):
            if self._retire(thread):
                return None
        call, thread.call = thread.call, None
        return call

    def _returned(self, thread: _Thread) -> Call | None:
        """``thread``'s call returned: the backlog's next call for it, if any. Else it is
        idle again (or, stopped, is ended by a ``None`` handed to it).

        Idle again before the waiter hears of the end: the waiter's next call must find
        this thread free, not every thread held.
        """
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            self._running -= 1
            if not self._stopped:
                self._idle.append(thread)
                return None
        thread.hand(None)
        return None

    def _retire(self, thread: _Thread) -> bool:
        """``thread`` waited ``idle_s`` for a call: whether it ends (else a call is being
        handed to it)."""
        with self._lock:
            if thread in self._idle:
                self._idle.remove(thread)
                return True
            return False
