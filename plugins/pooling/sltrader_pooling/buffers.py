"""Pooled intermediate arrays for feature builds.

A :class:`BufferPool` lends a :class:`BuildBuffers` to one build at a time. A
``BuildBuffers`` keeps the arrays its builds asked for, by dtype and exact length, so the
next build that gets it finds them waiting: a request it has seen before is a dict lookup
and allocates nothing. Nothing else is shared: arrays never move between two
``BuildBuffers``, and a ``BuildBuffers`` is lent to one build at a time, so two
concurrent builds never share a buffer.

Ownership: a lent ``BuildBuffers`` is touched only by the build that holds it (no lock);
the pool's idle list and counters are the pool's, behind its one lock. Memory is
bounded: at most ``max_idle_builds`` idle sets, each trimmed on release to its share of
``max_idle_bytes``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import attrs
import numpy as np

from sltrader_pooling.config import PoolingConfig

log = logging.getLogger(__name__)

# Poisoning fills reused buffers with a value a correct build overwrites before reading.
_POISON = {"f": np.nan, "c": np.nan, "i": -1, "u": np.iinfo(np.uint64).max, "b": True}


# What a released set looks its arrays up in: nothing, so every empty() after release()
# takes the slow path, which raises. The hit path then needs no "is it lent?" test.
_RELEASED: dict[Any, dict[int, _Slot]] = {}


class PoolError(RuntimeError):
    """A ``BuildBuffers`` was used after its release, or released twice."""


class _Slot:
    """The arrays of one ``(dtype, length)`` in one ``BuildBuffers``.

    ``arrays[:used]`` are lent to the current build; ``arrays[used:]`` are spare. An index
    rather than popping and appending keeps the list as it is from build to build.
    """

    __slots__ = ("arrays", "used")

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.used = 0


class BuildBuffers:
    """The buffers of one feature build (implements ``sltrader_plugins.FeatureBuffers``).

    Get one from :meth:`BufferPool.acquire`; the build calls :meth:`empty` for each
    intermediate array and :meth:`release` once at the end.
    """

    __slots__ = (
        "_kept",
        "_pool",
        "_slots",
        "_tables",
        "n_candles",
        "nbytes",
        "symbol",
        "timeframe",
    )

    def __init__(self, pool: BufferPool) -> None:
        self._pool = pool
        # By the dtype argument as the build spells it (np.float64, "f8", ...), then by
        # length: a hit needs no dtype normalisation. Spellings of one dtype get separate
        # arrays, which costs memory only for a build that mixes spellings.
        self._kept: dict[Any, dict[int, _Slot]] = {}
        self._tables = _RELEASED  # _kept while lent
        self._slots: list[_Slot] = []  # every slot of _kept, for the reset on release
        self.nbytes = 0  #: bytes of every array held, lent or spare
        # The build it is lent to, for leak reports.
        self.symbol = ""
        self.timeframe = ""
        self.n_candles = 0

    def __repr__(self) -> str:
        state = "lent" if self.lent else "idle"
        build = f"{self.symbol} {self.timeframe} n={self.n_candles}" if self.symbol else "-"
        return f"<BuildBuffers {build} {state}, {self.nbytes} bytes>"

    @property
    def lent(self) -> bool:
        """Lent to a build now (between :meth:`lend` and :meth:`release`)."""
        return self._tables is not _RELEASED

    def lend(self, symbol: str, timeframe: str, n_candles: int) -> None:
        """Start a build (called by :meth:`BufferPool.acquire`)."""
        self.symbol, self.timeframe, self.n_candles = symbol, timeframe, n_candles
        self._tables = self._kept

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        """An uninitialised array of ``n`` elements of ``dtype``, for this build only."""
        try:
            slot = self._tables[dtype][n]
            array = slot.arrays[slot.used]
        except (KeyError, IndexError, TypeError):  # TypeError: an unhashable dtype
            return self._new(n, dtype)
        slot.used += 1
        return array

    def _new(self, n: int, dtype: Any) -> np.ndarray:
        """A request not served from a spare array: allocate, and keep it if poolable."""
        if not self.lent:
            raise PoolError(f"{self!r}: empty() after release()")
        array = np.empty(n, dtype)  # raises as numpy does for a bad length or dtype
        if not self._pool.poolable(array):
            self._pool.count(unpooled=1)
            return array
        try:
            table = self._kept.setdefault(dtype, {})
        except TypeError:  # an unhashable spelling of a poolable dtype: not kept
            self._pool.count(unpooled=1)
            return array
        slot = table.get(n)
        if slot is None:
            slot = table[n] = _Slot()
            self._slots.append(slot)
        slot.arrays.append(array)
        slot.used += 1
        self.nbytes += array.nbytes
        self._pool.count(misses=1)
        return array

    def release(self) -> None:
        """The build is over: every array becomes spare and the set goes back to its pool.

        :raises PoolError: already released.
        """
        if self._tables is _RELEASED:
            raise PoolError(f"{self!r} released twice")
        self._tables = _RELEASED
        pool = self._pool
        # Counted before the trim, which may drop a slot together with what it served.
        served = sum(slot.used for slot in self._slots)
        dropped = (
            self._trim(pool.max_bytes_per_build) if self.nbytes > pool.max_bytes_per_build else 0
        )
        for slot in self._slots:
            slot.used = 0
        if pool.config.poison:
            self._poison()
        pool.give_back(self, served, dropped)

    def _poison(self) -> None:
        for slot in self._slots:
            for array in slot.arrays:
                value = _POISON.get(array.dtype.kind)
                if value is not None:
                    array.fill(value)

    def _trim(self, max_bytes: int) -> int:
        """Drop arrays until at most ``max_bytes`` are held; return the bytes dropped.

        Lengths this build did not ask for go first (a series that changed length leaves
        them behind), then the longest.
        """
        before = self.nbytes
        for unused_only in (True, False):
            for table in self._kept.values():
                for n in sorted(table, reverse=True):
                    slot = table[n]
                    if unused_only and slot.used:
                        continue
                    while slot.arrays and self.nbytes > max_bytes:
                        self.nbytes -= slot.arrays.pop().nbytes
                    if not slot.arrays:
                        del table[n]
                        self._slots.remove(slot)
                    if self.nbytes <= max_bytes:
                        return before - self.nbytes
        return before - self.nbytes


@attrs.frozen
class BufferStats:
    """Counters of a :class:`BufferPool` since it was built.

    :ivar hits: ``empty`` calls served by a spare array (no allocation).
    :ivar misses: ``empty`` calls that allocated an array the pool then kept.
    :ivar unpooled: ``empty`` calls answered by plain ``np.empty`` (an array above
        ``max_pooled_bytes``, or an object or structured dtype).
    :ivar builds: builds served (released).
    :ivar outstanding: builds holding buffers now.
    :ivar idle_builds: idle ``BuildBuffers`` waiting for a build.
    :ivar idle_bytes: bytes of arrays held by idle ``BuildBuffers``.
    :ivar created: ``BuildBuffers`` made (the most builds that ever ran at once).
    :ivar dropped_bytes: bytes of arrays dropped to respect the idle bound.
    """

    hits: int
    misses: int
    unpooled: int
    builds: int
    outstanding: int
    idle_builds: int
    idle_bytes: int
    created: int
    dropped_bytes: int


class BufferPool:
    """The pooled ``FeatureBuffers`` of every build: one shared, bounded pool.

    :param config: sizes and bounds.
    :param max_idle_builds: the most idle ``BuildBuffers`` kept (normally the host's worker
        count: no more builds run at once). ``config.max_idle_bytes`` is split evenly
        between them, so the idle bytes never exceed it.
    :param name: the pool's name in messages (the plugin passes its own).
    """

    def __init__(
        self, config: PoolingConfig, max_idle_builds: int, name: str = "buffer pool"
    ) -> None:
        if max_idle_builds < 0:
            raise ValueError(f"max_idle_builds must be >= 0, got {max_idle_builds}")
        self.config = config
        self.name = name
        self.max_idle_builds = max_idle_builds
        self.max_bytes_per_build = config.max_idle_bytes // max(max_idle_builds, 1)
        self._lock = threading.Lock()  # guards everything below
        self._idle: list[BuildBuffers] = []  # last in, first out: its arrays are warm
        self._sets: list[BuildBuffers] = []  # every set not dropped, idle or lent
        self._created = 0
        self._builds = 0
        self._served = 0  # pooled requests of released builds: hits and misses
        self._misses = 0
        self._unpooled = 0
        self._dropped = 0

    def acquire(self, symbol: str = "", timeframe: str = "", n_candles: int = 0) -> BuildBuffers:
        """The buffers of one build; the arguments name it in leak reports."""
        with self._lock:
            if self._idle:
                buffers = self._idle.pop()
            else:  # a few attributes: made under the lock, so _sets counts it at once
                buffers = BuildBuffers(self)
                self._sets.append(buffers)
                self._created += 1
        buffers.lend(symbol, timeframe, n_candles)
        return buffers

    def give_back(self, buffers: BuildBuffers, served: int, dropped: int) -> None:
        """Take back a released set (called by :meth:`BuildBuffers.release` only).

        :param served: its build's requests served by pooled arrays.
        :param dropped: bytes it dropped to stay within its share of the bound.
        """
        with self._lock:
            self._builds += 1
            self._served += served
            self._dropped += dropped
            if len(self._idle) < self.max_idle_builds:
                self._idle.append(buffers)
            else:
                self._sets.remove(buffers)
                self._dropped += buffers.nbytes

    def poolable(self, array: np.ndarray) -> bool:
        """Whether ``array`` may be kept for later builds: not above ``max_pooled_bytes``
        (one huge request must not pin its memory), and no object dtype (the pool would
        keep Python objects alive)."""
        return array.nbytes <= self.config.max_pooled_bytes and not array.dtype.hasobject

    def count(self, *, misses: int = 0, unpooled: int = 0) -> None:
        """Count requests that allocated (per request: they are the rare ones)."""
        with self._lock:
            self._misses += misses
            self._unpooled += unpooled

    def stats(self) -> BufferStats:
        """The counters; a build in progress is counted at its release (its misses at once)."""
        with self._lock:
            return BufferStats(
                hits=max(0, self._served - self._misses),
                misses=self._misses,
                unpooled=self._unpooled,
                builds=self._builds,
                outstanding=len(self._sets) - len(self._idle),
                idle_builds=len(self._idle),
                idle_bytes=sum(buffers.nbytes for buffers in self._idle),
                created=self._created,
                dropped_bytes=self._dropped,
            )

    def leaks(self) -> list[BuildBuffers]:
        """The builds that acquired buffers and have not released them."""
        with self._lock:
            return [buffers for buffers in self._sets if buffers.lent]

    def shutdown(self, logger: logging.Logger | None = None) -> int:
        """Drop the idle sets and log a warning naming every build that never released
        its own (a late release still works).

        :return: the number of such builds.
        """
        with self._lock:
            for buffers in self._idle:
                self._sets.remove(buffers)
            self._idle.clear()
        leaked = self.leaks()
        if leaked:
            shown = ", ".join(repr(buffers) for buffers in leaked[:10])
            more = f" and {len(leaked) - 10} more" if len(leaked) > 10 else ""
            (logger or log).warning(
                "%s: %d build(s) acquired buffers and never released them: %s%s",
                self.name,
                len(leaked),
                shown,
                more,
            )
        return len(leaked)
