"""Marks on a plugin's hook implementations, beside pluggy's own (``tryfirst``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_INLINE = "__sltrader_inline_while__"

_F = TypeVar("_F", bound=Callable[..., Any])

#: A test of a plugin: whether its marked hook may run in the main loop for this call.
InlineTest = Callable[[Any], bool]


def _always(plugin: object) -> bool:
    return True


def nonblocking(function: _F) -> _F:
    """Mark a main-loop hook implementation that never blocks: the manager calls it in
    the trader's main loop itself, without the hand-over to the plugin's thread and
    without ``hook_timeout_s``. For bookkeeping that returns in microseconds: no I/O, no
    sleep, no wait for another thread, no lock that anyone holds for longer than that.
    The hand-over costs a fast trader about as much as such a call does, at every call;
    an implementation that does block stalls the trader, unbounded. Faults are caught
    and counted as for any hook. It may run while a call of the same plugin that overran
    its bound still runs on the plugin's thread. Worker hooks are never bounded: the mark
    changes nothing there.
    """
    setattr(function, _INLINE, _always)
    return function


def nonblocking_while(idle: InlineTest) -> Callable[[_F], _F]:
    """Mark a main-loop hook implementation that does not block while ``idle(plugin)``
    is true, ``plugin`` being the object registered (a plugin stepped aside, or one with
    nobody to share with, has nothing to wait for). Before each call the manager asks
    ``idle`` in the main loop: while it holds, the call runs there as a
    :func:`nonblocking` one's does; otherwise it is handed to the plugin's thread and
    bounded as any. So a plugin that sits out costs the trader no hand-over.

    ``idle`` is asked on every call: it must answer at once (read a flag; no lock anyone
    holds long) and never raise (a fault in it is counted as the hook's). The call
    should decide from the plugin's state as it finds it: a call of the plugin still
    running on its thread after overrunning its bound may have changed it since.
    """

    def mark(function: _F) -> _F:
        setattr(function, _INLINE, idle)
        return function

    return mark


def inline_test(function: Callable[..., Any]) -> InlineTest | None:
    """The test of :func:`nonblocking` or :func:`nonblocking_while` on ``function``
    (``None``: unmarked, always handed over)."""
    test = getattr(function, _INLINE, None)
    return test if callable(test) else None


def always_inline(test: InlineTest | None) -> bool:
    """Whether a test marks a :func:`nonblocking` implementation (never handed over)."""
    return test is _always
