"""``HookThread``: one plugin's main-loop hook calls, each waited for at most a bound.

The trader's main loop must not stall on a plugin. The manager runs each main-loop hook
call of a plugin on that plugin's own daemon thread and waits for it at most the bound.
A call that overruns is abandoned, not cancelled (Python cannot stop a thread): it runs
on, and until it returns that plugin's later main-loop calls are skipped, so a plugin's
main-loop hooks never run concurrently with each other and a hung plugin holds one
thread, not one per call. The thread is a daemon: a call that never returns cannot keep
the process from exiting.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any


class Outcome(enum.Enum):
    DONE = "done"  #: the call returned or raised within the bound
    OVERRAN = "overran"  #: still running at the bound: abandoned
    BUSY = "busy"  #: not started: an abandoned call of this plugin is still running


_Call = tuple[Future, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class HookThread:
    """Runs the calls of one plugin, one at a time, on a daemon thread.

    Called from one thread only (the trader's main loop): no lock.
    """

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._abandoned: Future | None = None
        self._stopped = False  #: after ``stop``, a thread serves one call and ends

    def call(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        bound: float,
    ) -> tuple[Outcome, Future | None]:
        """Run ``function(*args, **kwargs)`` and wait for it at most ``bound`` seconds.

        :return: the outcome, and the call's future when it is ``DONE``.
        """
        if self._abandoned is not None:
            if not self._abandoned.done():
                return Outcome.BUSY, None
            self._abandoned = None
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"sltrader-hooks-{self.plugin}", daemon=True
            )
            self._thread.start()
        future: Future = Future()
        self._calls.put((future, function, args, kwargs))
        if self._stopped:  # a call after stop (a report, say) leaves no thread behind
            self._calls.put(None)
            self._thread = None
        try:
            future.exception(timeout=bound)
        except FutureTimeout:
            self._abandoned = future
            return Outcome.OVERRAN, None
        return Outcome.DONE, future

    def stop(self) -> None:
        """Let the thread end once it is idle; never waits for it. A later call runs on
        a thread of its own that ends with it."""
        self._stopped = True
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, function, args, kwargs = item
            future.set_running_or_notify_cancel()
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, which decides
                future.set_exception(exc)
