"""``HookThread``: one plugin's main-loop hook calls, each waited for at most a bound.

The trader's main loop must not stall on a plugin. The manager runs each main-loop hook
call of a plugin on that plugin's own daemon thread and waits for it at most the bound.
A call that overruns is abandoned, not cancelled (Python cannot stop a thread): it runs
on, and until it returns that plugin's later main-loop calls are skipped, so a plugin's
main-loop hooks never run concurrently with each other and a hung plugin holds one
thread, not one per call. The thread is a daemon: a call that never returns cannot keep
the process from exiting.

A call is handed over with two locks used as binary semaphores, not a queue and a
future: every main-loop hook call of every plugin pays the hand-over both ways, and two
lock releases cost about half as much as a queue put, a future and its condition.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Any


class Outcome(enum.Enum):
    DONE = "done"  #: the call returned or raised within the bound
    OVERRAN = "overran"  #: still running at the bound: abandoned
    BUSY = "busy"  #: not started: an abandoned call of this plugin is still running


_Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Server:
    """A daemon thread that runs the calls it is handed, one at a time.

    The caller releases ``_go`` when a call is in ``_call`` (``None``: end the thread);
    the thread releases ``_done`` when the call's outcome is in ``_result`` or ``_error``.
    Each release orders the writes before it for the side that acquires.
    """

    def __init__(self, name: str, once: bool) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._call: _Call | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._once = once  #: serve one call, then end
        self._ending = False
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def hand(self, call: _Call) -> None:
        self._call = call
        self._go.release()

    def end(self) -> None:
        """End the thread once its call (if any) returns; never waits."""
        if not self._ending:
            self._ending = True
            self._call = None
            self._go.release()

    def wait(self, timeout: float) -> bool:
        """Whether the call handed over has ended, waiting at most ``timeout`` seconds
        (0: not at all); once it has, :meth:`collect` gives its outcome."""
        if timeout > 0:
            return self._done.acquire(timeout=timeout)
        return self._done.acquire(blocking=False)

    def collect(self) -> Any:
        """The ended call's result; raises what it raised."""
        result, error = self._result, self._error
        self.discard()  # nothing of a call outlives it here
        if error is not None:
            raise error
        return result

    def discard(self) -> None:
        """Forget the ended call's outcome."""
        self._result = self._error = None

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            call = self._call
            if call is None:
                return
            function, args, kwargs = call
            try:
                self._result = function(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, which decides
                self._error = exc
            self._done.release()
            if self._once:
                return


class HookThread:
    """Runs the calls of one plugin, one at a time, on a daemon thread.

    Called from one thread only (the trader's main loop): no lock.
    """

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self._server: _Server | None = None  #: idle, waiting for a call
        self._abandoned: _Server | None = None  #: its call overran and may still run
        self._stopped = False  #: after ``stop``, a thread serves one call and ends

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
        abandoned = self._abandoned
        if abandoned is not None:
            if not abandoned.wait(0):
                return Outcome.BUSY, None
            self._abandoned = None
            if not self._stopped:
                self._server = abandoned  # idle again
            abandoned.discard()  # nobody waits for the abandoned call's outcome
        server = self._server
        if server is None:
            # after stop, a call (a report, say) runs on a thread that ends with it
            server = _Server(f"sltrader-hooks-{self.plugin}", once=self._stopped)
            self._server = None if self._stopped else server
        server.hand((function, args, kwargs))
        if not server.wait(bound):
            self._server, self._abandoned = None, server
            return Outcome.OVERRAN, None
        return Outcome.DONE, server.collect()

    def stop(self) -> None:
        """Let the thread end once it is idle; never waits for it. A later call runs on
        a thread of its own that ends with it."""
        self._stopped = True
        for server in (self._server, self._abandoned):
            if server is not None:
                server.end()
        self._server = None
