"""``Tally``: events counted by kind, the first of each told apart.

The one way in this project to log the first of a kind of event and only count the rest
(a plugin's fault in a hook, an unclosed candle, a model that cannot batch, a repair a
Redis script made): a log line per event would flood the log from a loop that runs for
hours, and none would hide the fault, which stays in the counters.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable

#: The kinds a tally remembers by default: a bound, since keys may come from data.
MAX_KINDS = 1024


class Tally:
    """Counts events by kind; :meth:`add` says whether the event is the first of its kind.

    Thread-safe. At most ``max_kinds`` kinds are counted: an event of a new kind past
    that is counted under ``overflow`` only, and is never a first (nothing grows with a
    run's length).
    """

    def __init__(self, max_kinds: int = MAX_KINDS, overflow: Hashable = "(others)") -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Hashable] = Counter()
        self._max_kinds = max_kinds
        self._overflow = overflow

    def add(self, kind: Hashable = None) -> bool:
        """Count one event of ``kind``: ``True`` when it is the first of its kind."""
        with self._lock:
            counts = self._counts
            if kind not in counts and len(counts) >= self._max_kinds:
                counts[self._overflow] += 1
                return False
            counts[kind] += 1
            return counts[kind] == 1

    def count(self, kind: Hashable = None) -> int:
        """The events of ``kind`` so far."""
        with self._lock:
            return self._counts[kind]

    def counts(self) -> dict[Hashable, int]:
        """Every kind's count, in the order the kinds first came."""
        with self._lock:
            return dict(self._counts)
