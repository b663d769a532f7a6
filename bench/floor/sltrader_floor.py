"""The floor of feature-build time through ``on_feature_build``: buffers that cost nothing.

A bench experiment, never a plugin to run a trader with. Each thread records the arrays
of its first build of each series length and hands the same arrays back, in the same
call order, to every later build of that length: no lock, no lookup, no counting, no
bound (memory grows with the lengths seen and is never given back). That is only correct
because the host asks for its buffers in a fixed order for a given length, which the
bench checks (``bench/test_pooling_bench.py::test_floor_is_exact``, and the decisions
digest of ``sltrader bench``). No real pool can be faster through this hook, so its
ratio is the best any buffer plugin can reach on this host.

    pip install ./bench/floor
    sltrader bench --sets none,pooling,floor --size full --repeats 3
    pip uninstall sltrader-floor-experiment
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from sltrader_plugins import hookimpl


class RecordedBuffers:
    """One thread's buffers for one series length."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.next = 0
        self.recording = True

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        if self.recording:
            array = np.empty(n, dtype)
            self.arrays.append(array)
            return array
        array = self.arrays[self.next]
        self.next += 1
        return array

    def release(self) -> None:
        self.recording = False
        self.next = 0


class FloorPlugin:
    def __init__(self) -> None:
        self._local = threading.local()

    @hookimpl
    def on_feature_build(self, symbol: str, timeframe: str, n_candles: int) -> RecordedBuffers:
        by_length = getattr(self._local, "by_length", None)
        if by_length is None:
            by_length = self._local.by_length = {}
        buffers = by_length.get(n_candles)
        if buffers is None:
            buffers = by_length[n_candles] = RecordedBuffers()
        return buffers
