"""Marks on a plugin's hook implementations, beside pluggy's own (``tryfirst``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_NONBLOCKING = "__sltrader_nonblocking__"

_F = TypeVar("_F", bound=Callable[..., Any])


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
    setattr(function, _NONBLOCKING, True)
    return function


def is_nonblocking(function: Callable[..., Any]) -> bool:
    """Whether ``function`` was marked with :func:`nonblocking`."""
    return bool(getattr(function, _NONBLOCKING, False))
