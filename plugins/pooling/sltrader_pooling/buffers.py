"""Pooled intermediate arrays for feature builds.

A :class:`BuildBuffers` is the ``FeatureBuffers`` of one build at a time and is itself
pooled (by a :class:`~sltrader_pooling.pool.ObjectPool`): it keeps the arrays it handed out
in its last builds, so the next build that gets it finds them waiting, by dtype and
length, and an ``empty`` call that hits allocates nothing at all, not even a view.
Buffers never move between two lent ``BuildBuffers`` (only between an idle one's tables
and its own next build), so two concurrent builds never share a buffer.

A miss allocates a *base* array of the request's size class (a few classes per power of
two) and hands out a view of its first ``n`` elements (or the base itself when ``n`` is a
class size); the view is kept too, so it is built once, not per build. A length never
seen before first takes a spare base of its class from another length's table. Idle
memory is bounded per BuildBuffers (trimmed on release, unused lengths first) and in the
number of idle BuildBuffers.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from sltrader_pooling.config import PoolingConfig
from sltrader_pooling.pool import ObjectPool, PoolError

log = logging.getLogger(__name__)

MIN_CLASS = 16  #: the smallest size class, in elements
FLUSH_AT = 200  #: a BuildBuffers hands its counts to the pool before one passes this

# Poisoning fills reused buffers with a value a correct build overwrites before reading.
_POISON = {"f": np.nan, "c": np.nan, "i": -1, "u": np.iinfo(np.uint64).max, "b": True}


def size_class(n: int, classes_per_doubling: int = 4) -> int:
    """The size class of a request for ``n`` elements (an element count >= ``n``).

    ``classes_per_doubling`` classes between two powers of two: with 4, lengths between
    257 and 512 fall in 320, 384, 448 or 512. Lengths of one class may reuse each other's
    spare arrays (when long enough), so a series that grows by a candle reuses memory.
    """
    if n <= MIN_CLASS:
        return MIN_CLASS
    top = 1 << (n - 1).bit_length()
    half = top >> 1
    step = max(half // classes_per_doubling, 1)
    return half + -(-(n - half) // step) * step


def _base(array: np.ndarray) -> np.ndarray:
    base = array.base
    return array if base is None else base  # type: ignore[return-value]


class _Slot:
    """The buffers of one ``(dtype, length)`` in one BuildBuffers.

    ``arrays[:used]`` are lent to the current build; ``arrays[used:]`` are spare.
    Indexing instead of popping keeps the list's storage: a pop would shrink it and the
    next build's append would grow it again, an allocation each way.
    """

    __slots__ = ("arrays", "used")

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.used = 0


@attrs.frozen
class _DtypeInfo:
    index: int  #: position in every BuildBuffers' tables; -1: never pooled
    dtype: np.dtype[Any]
    min_elements: int
    max_elements: int


_INACTIVE: dict[Any, dict[int, _Slot]] = {}  # what a released BuildBuffers looks up in


class BuildBuffers:
    """The buffers of one feature build (implements ``sltrader_plugins.FeatureBuffers``).

    Get one from :meth:`BufferPool.acquire`; the host calls :meth:`empty` for each
    intermediate and :meth:`release` once at the end.
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_builds",
        "_hits",
        "_lookup",
        "_misses",
        "_nbytes",
        "_pool",
        "_release",
        "_slots",
        "_spellings",
        "_tables",
        "_unpooled",
        "n_candles",
        "symbol",
        "timeframe",
    )

    def __init__(self, pool: BufferPool, release: Callable[[BuildBuffers], None]) -> None:
        self._pool = pool
        self._release = release  # the pool's, bound once: a release makes fewer calls
        self._tables: list[dict[int, _Slot]] = []  # by dtype index, then length
        self._slots: list[_Slot] = []  # every slot of _tables, to reset without views
        # Tables by the dtype argument as the host spells it (np.float64, "f8", ...), so
        # the hit path needs no normalisation; spellings of one dtype share one table.
        self._spellings: dict[Any, dict[int, _Slot]] = {}
        # _spellings while lent; the empty _INACTIVE while released, so that a late
        # empty() takes the slow path, which raises, at no cost to the hit path.
        self._lookup = _INACTIVE
        self._active = False
        self._nbytes = 0  # bytes of every base array held
        # Counts not yet added to the pool's totals. They are flushed before they pass
        # 256 (FLUSH_AT): up to there an int is CPython's cached small int, so counting
        # allocates nothing; the pool's big totals grow once per flush, not per build.
        self._builds = 0
        self._hits = 0
        self._misses = 0
        self._unpooled = 0
        # What the current (or last) build is, for leak reports; kept as references so
        # that lending allocates nothing.
        self.symbol = ""
        self.timeframe = ""
        self.n_candles = 0

    def __repr__(self) -> str:
        state = "lent" if self._active else "idle"
        build = f"{self.symbol} {self.timeframe} n={self.n_candles}" if self.symbol else "-"
        return f"<BuildBuffers {build} {state}, {self._nbytes} bytes>"

    @property
    def nbytes(self) -> int:
        """Bytes of every buffer this object holds (lent or spare)."""
        return self._nbytes

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        """An uninitialised array of ``n`` elements of ``dtype``, for this build only."""
        # The hit path allocates nothing (no int above 256, no tuple, no view) and counts
        # nothing: hits are summed from the slots at release.
        try:
            slot = self._lookup[dtype][n]
            used = slot.used
            array = slot.arrays[used]
        except (KeyError, IndexError):
            return self._empty_slow(n, dtype)
        slot.used = used + 1
        return array

    def _empty_slow(self, n: int, dtype: Any) -> np.ndarray:
        if not self._active:
            raise PoolError(f"{self!r}: empty() after release()")
        pool = self._pool
        info = pool.dtypes.get(dtype)
        if info is None:
            info = pool.dtype_info(dtype)
        index = info.index
        if index < 0 or n < info.min_elements or n > info.max_elements:
            self._unpooled += 1
            return np.empty(n, info.dtype)
        while len(self._tables) <= index:
            self._tables.append({})
        table = self._lookup[dtype] = self._tables[index]
        slot = table.get(n)
        if slot is None:
            slot = table[n] = _Slot()
            self._slots.append(slot)
        if slot.used < len(slot.arrays):  # only the first lookup of this spelling
            array = slot.arrays[slot.used]
        else:
            array = self._grow(table, n, info)
            slot.arrays.append(array)
        slot.used += 1
        return array

    def _grow(self, table: dict[int, _Slot], n: int, info: _DtypeInfo) -> np.ndarray:
        """A buffer for a length this object has no spare of: a spare of another length
        of the same size class, if long enough, else a new array of the class size.

        The class size, not exactly ``n``: a series that grows by a candle per scan then
        keeps its memory until it crosses a class (measured on the host's build, a view
        costs neither time nor allocations against a whole array; the slack is at most
        1/classes_per_doubling, 6.7 % for 600 candles).
        """
        classes = self._pool.config.classes_per_doubling
        n = int(n)  # a numpy integer has no bit_length()
        wanted = size_class(n, classes)
        for length, other in table.items():
            if (
                length != n
                and len(other.arrays) > other.used
                and size_class(length, classes) == wanted
                and _base(other.arrays[-1]).shape[0] >= n
            ):
                base = _base(other.arrays.pop())
                return base if base.shape[0] == n else base[:n]
        self._misses += 1
        base = np.empty(wanted, info.dtype)
        self._nbytes += base.nbytes
        return base if n == wanted else base[:n]

    def release(self) -> None:
        """The build is over: every buffer goes back to the pool.

        :raises PoolError: this object was already released.
        """
        self._release(self)

    # -- called by the pool -------------------------------------------------------------

    def _recycle(self) -> None:
        """Make every buffer spare again and trim to the pool's bound per build.

        The pool's ``reset``: runs once per build, so in the common case it allocates
        nothing (no views, no comprehension, no enumerate, no int past 256).
        """
        self._active = False
        self._lookup = _INACTIVE
        pool = self._pool
        if self._nbytes > pool.max_bytes_per_build:
            pool._add_dropped(self._trim(pool.max_bytes_per_build))
        lent = 0
        for slot in self._slots:
            lent += slot.used
            slot.used = 0
        self._hits += lent
        self._builds += 1
        if pool._poison is not None:
            self._poison(pool._poison)
        if (
            self._hits > FLUSH_AT
            or self._builds > FLUSH_AT
            or self._misses > FLUSH_AT
            or self._unpooled > FLUSH_AT
        ):
            pool._flush(self)

    def _poison(self, values: dict[int, Any]) -> None:
        for index, table in enumerate(self._tables):
            if index in values:
                for slot in table.values():
                    for array in slot.arrays:
                        _base(array).fill(values[index])

    def _take_counts(self) -> tuple[int, int, int, int]:
        """Hits, misses, unpooled requests and builds not yet counted by the pool."""
        counts = (self._hits - self._misses, self._misses, self._unpooled, self._builds)
        self._hits = self._misses = self._unpooled = self._builds = 0
        return counts

    def _trim(self, max_bytes: int) -> int:
        # Drop what this build did not use first: it is what the next build is least
        # likely to want. Then the newest buffers of the largest lengths.
        dropped = 0
        for unused_only in (True, False):
            for table in self._tables:
                for length in sorted(table, reverse=True):
                    slot = table[length]
                    if unused_only and slot.used:
                        continue
                    while slot.arrays and self._nbytes > max_bytes:
                        nbytes = _base(slot.arrays.pop()).nbytes
                        self._nbytes -= nbytes
                        dropped += nbytes
                    if not slot.arrays:
                        # A length no longer served (e.g. the series grew): forget it,
                        # after counting what it lent in this build (_recycle sums the
                        # slots that remain).
                        self._hits += slot.used
                        del table[length]
                        self._slots.remove(slot)
                    if self._nbytes <= max_bytes:
                        return dropped
        return dropped


@attrs.frozen
class BufferStats:
    """Counters of a :class:`BufferPool` since it was built.

    :ivar hits: ``empty`` calls served by a pooled buffer.
    :ivar misses: ``empty`` calls of a poolable size that allocated a new buffer.
    :ivar unpooled: ``empty`` calls below ``min_pooled_bytes``, above ``max_pooled_bytes``
        or of a dtype never pooled, answered by plain ``np.empty``.
    :ivar builds: builds served (released).
    :ivar outstanding: builds holding buffers now.
    :ivar idle_builds: idle ``BuildBuffers`` waiting for a build.
    :ivar idle_bytes: bytes of buffers held by idle ``BuildBuffers``.
    :ivar created: ``BuildBuffers`` built (the most builds that ever ran at once).
    :ivar dropped_bytes: bytes of buffers dropped to respect the idle bound.
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
        self.config = config
        self.max_idle_builds = max_idle_builds
        self.max_bytes_per_build = config.max_idle_bytes // max(max_idle_builds, 1)
        # Read without the lock from every worker: a dict lookup is atomic under the GIL,
        # and an entry is only ever added, always with the same value for the same key.
        self.dtypes: dict[Any, _DtypeInfo] = {}
        self._dtype_lock = threading.Lock()
        self._indexes: dict[np.dtype[Any], int] = {}
        self._poison: dict[int, Any] | None = {} if config.poison else None
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._unpooled = 0
        self._builds = 0
        self._dropped = 0
        # Every BuildBuffers alive, lent or idle, for the counts it has not flushed yet.
        self._members: weakref.WeakSet[BuildBuffers] = weakref.WeakSet()
        self._objects: ObjectPool[BuildBuffers] = ObjectPool(
            self._new_buffers,
            max_size=max_idle_builds,
            reset=BuildBuffers._recycle,
            weigh=lambda buffers: buffers.nbytes,
            discard=self._flush,
            describe=repr,
            name=name,
        )

    def _new_buffers(self) -> BuildBuffers:
        buffers = BuildBuffers(self, self._objects.release)
        with self._lock:
            self._members.add(buffers)
        return buffers

    def acquire(self, symbol: str = "", timeframe: str = "", n_candles: int = 0) -> BuildBuffers:
        """The buffers of one build; the arguments name it in leak reports."""
        buffers = self._objects.acquire()
        buffers._active = True
        buffers._lookup = buffers._spellings
        buffers.symbol = symbol
        buffers.timeframe = timeframe
        buffers.n_candles = n_candles
        return buffers

    def release(self, buffers: BuildBuffers) -> None:
        """Take back the buffers of a finished build (``BuildBuffers.release``)."""
        self._objects.release(buffers)

    def _add_dropped(self, nbytes: int) -> None:
        with self._lock:
            self._dropped += nbytes

    def _flush(self, buffers: BuildBuffers) -> None:
        with self._lock:
            hits, misses, unpooled, builds = buffers._take_counts()
            self._hits += hits
            self._misses += misses
            self._unpooled += unpooled
            self._builds += builds

    def dtype_info(self, dtype: Any) -> _DtypeInfo:
        """How requests for ``dtype`` are served (cached in :attr:`dtypes`)."""
        with self._dtype_lock:
            info = self.dtypes.get(dtype)
            if info is not None:
                return info
            dt = np.dtype(dtype)
            # Object arrays would keep Python objects alive in the pool; structured,
            # sub-array and non-native dtypes are rare enough not to deserve a table.
            poolable = (
                not dt.hasobject
                and dt.fields is None
                and dt.subdtype is None
                and dt.isnative
                and dt.itemsize > 0
            )
            if poolable:
                index = self._indexes.setdefault(dt, len(self._indexes))
                info = _DtypeInfo(
                    index=index,
                    dtype=dt,
                    min_elements=max(-(-self.config.min_pooled_bytes // dt.itemsize), 1),
                    max_elements=self.config.max_pooled_bytes // dt.itemsize,
                )
                if self._poison is not None and dt.kind in _POISON:
                    self._poison[index] = _POISON[dt.kind]
            else:
                info = _DtypeInfo(index=-1, dtype=dt, min_elements=0, max_elements=0)
            self.dtypes[dtype] = info
            return info

    def stats(self) -> BufferStats:
        """The counters; a build in progress may be counted in part."""
        objects = self._objects.stats()
        with self._lock:
            hits, misses, unpooled, builds = self._hits, self._misses, self._unpooled, self._builds
            for member in list(self._members):
                # Unflushed counts; the owner may be adding to them right now, which
                # makes a snapshot during a build approximate, never wrong at rest.
                misses += member._misses
                hits += member._hits - member._misses
                unpooled += member._unpooled
                builds += member._builds
            return BufferStats(
                hits=hits,
                misses=misses,
                unpooled=unpooled,
                builds=builds,
                outstanding=objects.outstanding,
                idle_builds=objects.idle,
                idle_bytes=objects.idle_weight,
                created=objects.created,
                dropped_bytes=self._dropped,
            )

    def leaks(self) -> list[BuildBuffers]:
        """The builds that acquired buffers and have not released them."""
        return self._objects.leaks()

    def shutdown(self, logger: logging.Logger | None = None) -> int:
        """Drop the idle buffers and log every build that never released its own.

        :return: the number of such builds.
        """
        return self._objects.shutdown(logger or log)
