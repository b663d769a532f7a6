"""A bounded, thread-safe object pool.

One shared pool behind one lock, last in first out. The alternatives and why they lost are
in ``docs/pooling.md``: in short, per-thread free lists multiply the idle bound by the
number of threads and need a hand-over path for objects released by another thread, which
is where Netty's ``Recycler`` grew without bound; an unbounded pool that keeps whatever it
is given is how Go's ``sync.Pool`` pinned huge buffers (golang/go#23199). Here one lock
operation is paid per acquire and per release, and the idle set has a hard bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import attrs

T = TypeVar("T")

log = logging.getLogger(__name__)


class PoolError(RuntimeError):
    """An object was released twice, or released to a pool that never lent it."""


@attrs.frozen
class PoolStats:
    """A snapshot of a pool's counters.

    :ivar created: objects the factory built.
    :ivar discarded: released objects dropped because the idle set was full (or the reset
        raised).
    :ivar outstanding: objects lent and not yet released.
    :ivar idle: objects waiting to be reused.
    :ivar idle_weight: the sum of ``weigh`` over the idle objects (0 without ``weigh``).
    """

    created: int
    discarded: int
    outstanding: int
    idle: int
    idle_weight: int


class ObjectPool(Generic[T]):
    """Lends objects built by ``factory``; keeps at most ``max_size`` idle ones.

    ``reset`` runs on every release, before the object becomes idle again, so an acquired
    object is always in its reset state (or fresh). If ``reset`` raises, the object is
    dropped rather than reused, and the error propagates to the releaser.

    The acquire and release paths keep their own allocations to the minimum (no counter
    of reuses, no running weight sum: each would allocate an int per call once past 256);
    ``stats`` computes what it reports.

    :param factory: builds a new object when none is idle.
    :param max_size: the most idle objects kept; 0 keeps none (every acquire builds).
    :param reset: puts a released object back into its initial state.
    :param weigh: the weight of an idle object (e.g. the bytes it holds), summed into
        ``stats().idle_weight``.
    :param discard: called with every object the pool drops (idle set full, failed
        reset, ``clear``), outside the lock.
    :param describe: how a leaked object is named in the shutdown report.
    :param name: the pool's name in messages.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        max_size: int,
        reset: Callable[[T], None] | None = None,
        weigh: Callable[[T], int] | None = None,
        discard: Callable[[T], None] | None = None,
        describe: Callable[[T], str] = repr,
        name: str = "pool",
    ) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self._factory = factory
        self._reset = reset
        self._weigh = weigh
        self._discard = discard
        self._describe = describe
        self.name = name
        self.max_size = max_size
        self._lock = threading.Lock()
        self._idle: list[T] = []
        # Keyed by the object itself where its type compares by identity (no int to
        # allocate per call), else by id(): the dict's strong reference keeps the id
        # from being reused while the object is out, and it works for unhashable or
        # value-compared objects (two equal lists are still two objects).
        self._lent: dict[Any, T] = {}
        self._identity_types: set[type] = set()
        # The methods of the hot path, bound once (as threading.Condition binds its lock's).
        # The allocation bench runs builds under a profiler, where every call of a C
        # method through an object (lock.acquire()) creates a bound method object just
        # to report the call; a stored bound method is passed as it is.
        self._lock_acquire = self._lock.acquire
        self._lock_release = self._lock.release
        self._idle_pop = self._idle.pop
        self._idle_append = self._idle.append
        self._lent_pop = self._lent.pop
        self._created = 0
        self._discarded = 0

    # acquire() and release() take the lock with explicit acquire/release calls rather
    # than ``with``: entering a ``with`` block allocates the bound ``__enter__`` and
    # ``__exit__`` methods (144 bytes, 2 blocks), three times per build otherwise.

    def acquire(self) -> T:
        """An idle object (the most recently released), or a new one from the factory."""
        self._lock_acquire()
        try:
            if self._idle:
                obj = self._idle_pop()
                # _key() inlined: one Python call fewer per build.
                kind = type(obj)
                self._lent[obj if kind in self._identity_types else self._key(obj)] = obj
                return obj
        finally:
            self._lock_release()
        # Build outside the lock: a slow factory must not serialize the other threads.
        obj = self._factory()
        with self._lock:
            self._lent[self._key(obj)] = obj
            self._created += 1
        return obj

    def _key(self, obj: T) -> Any:
        kind = type(obj)
        if kind in self._identity_types:
            return obj
        if kind.__hash__ is object.__hash__ and kind.__eq__ is object.__eq__:
            self._identity_types.add(kind)
            return obj
        return id(obj)

    def release(self, obj: T) -> None:
        """Give ``obj`` back: reset it and keep it if fewer than ``max_size`` are idle.

        :raises PoolError: ``obj`` is not currently lent by this pool (released twice, or
            never acquired from it). The pool is unchanged then.
        """
        self._lock_acquire()
        try:
            kind = type(obj)
            key = obj if kind in self._identity_types else self._key(obj)
            lent = self._lent_pop(key, None) is obj
            twice = not lent and any(idle is obj for idle in self._idle)
        finally:
            self._lock_release()
        if not lent:
            what = "released twice" if twice else "not lent by this pool (or released twice)"
            raise PoolError(f"{self.name}: {self._describe(obj)} {what}")
        if self._reset is not None:
            try:
                self._reset(obj)
            except BaseException:
                self._drop(obj)
                raise
        self._lock_acquire()
        try:
            kept = len(self._idle) < self.max_size
            if kept:
                self._idle_append(obj)
        finally:
            self._lock_release()
        if not kept:
            self._drop(obj)

    def _drop(self, obj: T) -> None:
        with self._lock:
            self._discarded += 1
        if self._discard is not None:
            self._discard(obj)

    @contextmanager
    def lease(self) -> Iterator[T]:
        """``with pool.lease() as obj:`` acquires, and releases on exit (also on error)."""
        obj = self.acquire()
        try:
            yield obj
        finally:
            self.release(obj)

    @property
    def outstanding(self) -> int:
        """Objects lent and not yet released."""
        with self._lock:
            return len(self._lent)

    def stats(self) -> PoolStats:
        with self._lock:
            idle = list(self._idle)
            stats = (self._created, self._discarded, len(self._lent))
        weigh = self._weigh
        return PoolStats(
            created=stats[0],
            discarded=stats[1],
            outstanding=stats[2],
            idle=len(idle),
            idle_weight=sum(weigh(obj) for obj in idle) if weigh is not None else 0,
        )

    def leaks(self) -> list[T]:
        """The objects lent and not released, oldest first."""
        with self._lock:
            return list(self._lent.values())

    def clear(self) -> int:
        """Drop every idle object; return how many were dropped."""
        with self._lock:
            dropped = self._idle[:]
            self._idle.clear()  # in place: _idle_pop and _idle_append are bound to it
        if self._discard is not None:
            for obj in dropped:
                self._discard(obj)
        return len(dropped)

    def shutdown(self, logger: logging.Logger | None = None) -> int:
        """Drop the idle objects and report (log a warning for) every object still lent.

        Lent objects stay counted as outstanding: a late release still works.

        :return: the number of leaked (outstanding) objects.
        """
        self.clear()
        leaked = self.leaks()
        if leaked:
            shown = ", ".join(self._describe(obj) for obj in leaked[:10])
            more = f" and {len(leaked) - 10} more" if len(leaked) > 10 else ""
            (logger or log).warning(
                "%s: %d object(s) acquired and never released: %s%s",
                self.name,
                len(leaked),
                shown,
                more,
            )
        return len(leaked)
