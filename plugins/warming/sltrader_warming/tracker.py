"""Access tracking: how hot each ``(symbol, timeframe)`` key is, in bounded memory.

Two structures, both of fixed size whatever the number of symbols seen:

* a :class:`FrequencySketch` (count-min, 4 rows of 8-bit counters, conservative update,
  all counters halved every ``10 * width`` additions as in Caffeine's TinyLFU), which
  estimates a key's recent access score without storing the key;
* a candidate table (:class:`AccessTracker`) of at most ``max_tracked`` keys in recency
  order, which is what the warmer can enumerate and rank. It holds its keys' strings, so
  a key longer than :data:`MAX_KEY_CHARS` is not tracked at all (only counted): that
  bounds the table in bytes, not only in keys.

Keys are always the tuple ``(symbol, timeframe)``: symbols such as ``BTC_USDT``,
``ETH/USDT`` or ``1000PEPE-USD`` are never parsed or split.
"""

from __future__ import annotations

import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import attrs
import numpy as np

from sltrader_plugins import timeframe_seconds

Key = tuple[str, str]

_MASK64 = (1 << 64) - 1
# Odd 64-bit multipliers (from splitmix64 / Caffeine's seeds): one independent-enough
# hash per sketch row, derived from a single CRC so a record costs one pass over the key.
_SEEDS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xC2B2AE3D27D4EB4F)
_DEPTH = len(_SEEDS)
_COUNTER_MAX = 255

#: The longest key tracked, symbol and timeframe together, in characters. Real symbols
#: are short ("1000PEPE-USD" is 12); without a cap, 4096 symbols of 10,000 characters
#: would keep 42 MB alive in the table. With it, an entry costs under 600 bytes even with
#: 4-byte characters (CPython 3.11), whatever the host sends.
MAX_KEY_CHARS = 64


def _key_hash(symbol: str, timeframe: str) -> int:
    # CRC32 rather than hash(): str hashes are salted per process, and the bench compares
    # runs in separate processes, so the warmer's choices must not depend on the salt.
    # The NUL separator keeps ("AB", "C1m") and ("A", "BC1m")-style pairs apart.
    data = symbol.encode("utf-8", "surrogatepass") + b"\x00" + timeframe.encode()
    crc = zlib.crc32(data)
    # Spread the 32 bits over 64 so the top bits used for indexing are well mixed.
    h = ((crc | (len(data) << 32)) * _SEEDS[0]) & _MASK64
    return h ^ (h >> 31)


class FrequencySketch:
    """A decaying count-min sketch of weighted accesses.

    Memory is ``4 * width`` bytes. Estimates never undercount the additions since the
    last halving; they overcount only on collisions, which the halving also ages out.
    """

    def __init__(self, width: int) -> None:
        if width < 16 or width & (width - 1):
            raise ValueError(f"sketch width must be a power of two >= 16, got {width}")
        self.width = width
        self._shift = 64 - (width.bit_length() - 1)
        # A bytearray indexes faster than a numpy array from Python code; the numpy view
        # over the same memory makes the periodic halving one vectorised operation.
        self._table = bytearray(_DEPTH * width)
        self._view = np.frombuffer(self._table, dtype=np.uint8)
        self._offsets = tuple(row * width for row in range(_DEPTH))
        self.sample_size = 10 * width
        self._additions = 0
        self.resets = 0

    def _indexes(self, h: int) -> tuple[int, int, int, int]:
        shift = self._shift
        o = self._offsets
        return (
            o[0] + (((h * _SEEDS[0]) & _MASK64) >> shift),
            o[1] + (((h * _SEEDS[1]) & _MASK64) >> shift),
            o[2] + (((h * _SEEDS[2]) & _MASK64) >> shift),
            o[3] + (((h * _SEEDS[3]) & _MASK64) >> shift),
        )

    def add(self, h: int, weight: int = 1) -> int:
        """Add ``weight`` accesses of the key hashed to ``h``; return its new estimate."""
        table = self._table
        i0, i1, i2, i3 = self._indexes(h)
        estimate = min(table[i0], table[i1], table[i2], table[i3])
        target = min(estimate + weight, _COUNTER_MAX)
        # Conservative update: raise only the counters below the new estimate, which keeps
        # colliding keys from inflating each other as much as a plain count-min would.
        for i in (i0, i1, i2, i3):
            if table[i] < target:
                table[i] = target
        self._additions += weight
        if self._additions >= self.sample_size:
            self._halve()
        return target

    def estimate(self, h: int) -> int:
        table = self._table
        i0, i1, i2, i3 = self._indexes(h)
        return min(table[i0], table[i1], table[i2], table[i3])

    def _halve(self) -> None:
        # Ageing: old popularity fades, so a symbol that left the universe cools down.
        self._view >>= 1
        self._additions //= 2
        self.resets += 1

    def nbytes(self) -> int:
        return len(self._table)


@attrs.define(slots=True)
class _Entry:
    hash: int
    last_access: float
    last_warm: float | None = None


@attrs.frozen
class Candidate:
    """A tracked key with what the warmer ranks it by."""

    symbol: str
    timeframe: str
    score: int
    last_access: float
    last_warm: float | None


def _next_power_of_two(n: int) -> int:
    return 1 << max(4, (n - 1).bit_length())


class AccessTracker:
    """Which keys are hot: a frequency sketch plus a bounded, recency-ordered table.

    Not thread-safe: the warmer serialises calls under its own lock.

    :param max_tracked: the most keys the table holds.
    :param recency_candles: a key counts as active while it was read within this many
        candles of its own timeframe.
    """

    def __init__(self, max_tracked: int, recency_candles: float = 1.0) -> None:
        self.max_tracked = max_tracked
        self.recency_candles = recency_candles
        # Width ~ table size, as Caffeine sizes its sketch to the cache's maximum.
        self.sketch = FrequencySketch(_next_power_of_two(max_tracked))
        self._table: OrderedDict[Key, _Entry] = OrderedDict()
        self.admissions_refused = 0
        self.evictions = 0
        self.untracked_long = 0  #: records of keys longer than MAX_KEY_CHARS

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def is_active(self, timeframe: str, last_access: float, now: float) -> bool:
        return now - last_access <= self.recency_candles * timeframe_seconds(timeframe)

    def record(self, symbol: str, timeframe: str, weight: int, now: float) -> None:
        """Count ``weight`` accesses of ``(symbol, timeframe)`` at ``now``."""
        key = (symbol, timeframe)
        entry = self._table.get(key)
        if entry is not None:
            self.sketch.add(entry.hash, weight)
            entry.last_access = now
            self._table.move_to_end(key)
            return
        if len(symbol) + len(timeframe) > MAX_KEY_CHARS:
            # Not even hashed: a key this long is no exchange's symbol, and holding it
            # would make the table's memory depend on what the host sends.
            self.untracked_long += 1
            return
        h = _key_hash(symbol, timeframe)
        score = self.sketch.add(h, weight)
        if len(self._table) >= self.max_tracked and not self._make_room(score, now):
            return
        self._table[key] = _Entry(h, now)

    def record_many(self, symbols: Sequence[str], timeframe: str, weight: int, now: float) -> None:
        """Count one access of every ``(symbol, timeframe)`` in ``symbols``."""
        for symbol in symbols:
            self.record(symbol, timeframe, weight, now)

    def _make_room(self, newcomer_score: int, now: float) -> bool:
        # TinyLFU-style admission against the least recently read key: a victim that is
        # still active and more popular than the newcomer stays, so a flood of one-off
        # symbols cannot push the working set out; an inactive victim always goes.
        victim_key, victim = next(iter(self._table.items()))
        if (
            self.is_active(victim_key[1], victim.last_access, now)
            and self.sketch.estimate(victim.hash) > newcomer_score
        ):
            self.admissions_refused += 1
            return False
        del self._table[victim_key]
        self.evictions += 1
        return True

    def score(self, symbol: str, timeframe: str) -> int:
        """The key's current access score (0 for a key never seen or aged out)."""
        entry = self._table.get((symbol, timeframe))
        h = entry.hash if entry is not None else _key_hash(symbol, timeframe)
        return self.sketch.estimate(h)

    def last_warm(self, symbol: str, timeframe: str) -> float | None:
        entry = self._table.get((symbol, timeframe))
        return entry.last_warm if entry is not None else None

    def mark_warmed(self, symbol: str, timeframe: str, now: float) -> None:
        entry = self._table.get((symbol, timeframe))
        if entry is not None:
            entry.last_warm = now

    def candidates(self) -> Iterator[Candidate]:
        """Every tracked key, most recently read first (ties in ranking favour recency)."""
        estimate = self.sketch.estimate
        for (symbol, timeframe), entry in reversed(self._table.items()):
            yield Candidate(
                symbol, timeframe, estimate(entry.hash), entry.last_access, entry.last_warm
            )

    def nbytes(self) -> int:
        """Memory held by the sketch and the table, including the keys' tuples and strings."""
        size = self.sketch.nbytes() + sys.getsizeof(self._table)
        for (symbol, timeframe), entry in self._table.items():
            size += sys.getsizeof((symbol, timeframe)) + sys.getsizeof(entry)
            # Strings shared with the host are counted anyway: an upper bound.
            size += sys.getsizeof(symbol) + sys.getsizeof(timeframe)
        return size
