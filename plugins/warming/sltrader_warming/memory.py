"""Giving back the memory the prefetch threads' malloc arenas keep.

glibc gives each thread that allocates an arena of its own (up to eight per CPU), and an
arena keeps the memory freed into it. The prefetch threads allocate every series they
fetch in arenas the trader's own threads seldom use; when those series are replaced, the
freed memory stays there, and the process's peak memory grows with it (docs/warming.md,
"Memory"). ``malloc_trim(0)`` returns every arena's free pages to the system: it frees
nothing that is in use and changes no allocation, only what the system counts as the
process's. The warmer calls it when its last prefetch thread ends, at most once per
:data:`MIN_INTERVAL_S`. Where the C library has no ``malloc_trim`` (musl, macOS) it does
nothing.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable

#: The shortest time between two trims: each walks every arena under its lock.
MIN_INTERVAL_S = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


class ArenaTrimmer:
    """Trims the process's malloc arenas when asked, at most once per
    :data:`MIN_INTERVAL_S`; counts the trims and the seconds they took. Thread-safe."""

    def __init__(
        self,
        trim: Callable[[int], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim = _malloc_trim() if trim is None else trim
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last: float | None = None  # guarded by _lock
        self.trims = 0
        self.trim_s = 0.0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """Trim now unless the last trim was under :data:`MIN_INTERVAL_S` ago; whether it
        trimmed."""
        if self._trim is None:
            return False
        with self._lock:
            now = self._monotonic()
            if self._last is not None and now - self._last < MIN_INTERVAL_S:
                return False
            self._last = now
        start = time.perf_counter()
        self._trim(0)
        elapsed = time.perf_counter() - start
        with self._lock:
            self.trims += 1
            self.trim_s += elapsed
        return True
