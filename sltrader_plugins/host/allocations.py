"""Gross allocation of one call: every byte and block allocated, also the ones freed.

tracemalloc only reports what is alive (and a peak), so a build that allocates and
frees the same temporary a hundred times would look free. We sample tracemalloc at
every Python and C call/return of the measured thread (``sys.setprofile``): the rise of
the traced peak over the level at the previous event is what that step allocated, and
the rise in ``sys.getallocatedblocks`` plus raw (non-pymalloc) allocations counts the
blocks. Two allocations inside one C call that free in between are counted once, so the
figures are a tight lower bound. The profile function's own small allocations are
calibrated away. Measuring is slow: it runs outside timed code.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import attrs

_PYMALLOC_MAX = 512  # larger requests bypass pymalloc: each is one raw block


@attrs.frozen
class Allocation:
    bytes: float
    blocks: float
    peak: float  #: transient peak above the starting level


class _Probe:
    def __init__(self) -> None:
        self.bytes = 0
        self.blocks = 0
        self.events = 0
        self.calls = 0  # Python calls: tracing materialises a frame object for each
        self.start = 0
        self.top = 0
        self._last_cur = 0
        self._last_blocks = 0

    def begin(self) -> None:
        tracemalloc.reset_peak()
        self._last_cur = tracemalloc.get_traced_memory()[0]
        self.start = self._last_cur
        self._last_blocks = sys.getallocatedblocks()

    def __call__(self, frame: Any, event: str, arg: Any) -> None:  # pragma: no cover
        # (runs as the profiler itself, where coverage cannot trace)
        blocks = sys.getallocatedblocks()
        cur, peak = tracemalloc.get_traced_memory()
        rise = peak - self._last_cur
        if rise > 0:
            self.bytes += rise
            if rise > _PYMALLOC_MAX:
                self.blocks += 1
        if blocks > self._last_blocks:
            self.blocks += blocks - self._last_blocks
        if peak > self.top:
            self.top = peak
        self.events += 1
        if event == "call":
            self.calls += 1
        # The probe's own integers must be gone before the next level is read, so
        # both reads see the probe in the same state.
        del blocks, cur, peak, rise
        tracemalloc.reset_peak()
        self._last_cur = tracemalloc.get_traced_memory()[0]
        self._last_blocks = sys.getallocatedblocks()


def _probe(call: Callable[[], Any], opcodes: bool = False) -> _Probe:
    probe = _Probe()

    def trace(frame: Any, event: str, arg: Any) -> Any:  # pragma: no cover - a tracer
        # Opcode events catch operators (``a + b``) that make no call at all.
        frame.f_trace_opcodes = True
        probe(frame, event, arg)
        return trace

    # Whatever tracer or profiler runs (coverage, a debugger) is put back afterwards.
    previous_trace, previous_profile = sys.gettrace(), sys.getprofile()
    probe.begin()
    if opcodes:
        sys.settrace(trace)
    sys.setprofile(probe)  # C calls (ufuncs) are seen by the profiler only
    try:
        call()
    finally:
        sys.setprofile(previous_profile)
        if opcodes:
            sys.settrace(previous_trace)
    return probe


def _nothing() -> None:
    return None


def _callee() -> None:
    return None


def _calling() -> None:
    x = 0
    while x < 50:
        x += 1
        _callee()


def _idle() -> None:
    x = 0
    while x < 50:
        x += 1
        len(())


def measure(call: Callable[[], Any], repeat: int = 1, opcodes: bool = False) -> Allocation:
    """Gross bytes and blocks allocated by ``call()``, averaged over ``repeat`` calls.

    By default the level is sampled at every Python and C call and return, which sees
    every allocation of code written with ufunc calls (as the feature engine is) but
    misses a temporary that an operator (``a + b``) creates and frees between two calls.
    ``opcodes=True`` also samples every bytecode, catching those, at the price of noise
    (a few blocks per build) that the calibration cannot remove entirely.

    Starts tracemalloc if it is not tracing (and stops it again). The caller should have
    warmed ``call`` once so one-time caches are not counted.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        # What the probe itself costs per event, measured on a call that allocates nothing.
        baseline = _probe(_idle, opcodes)
        per_event_bytes = baseline.bytes / max(1, baseline.events)
        per_event_blocks = baseline.blocks / max(1, baseline.events)
        # A traced Python call allocates a frame object an untraced one would not.
        calling = _probe(_calling, opcodes)
        per_call_bytes = (calling.bytes - per_event_bytes * calling.events) / calling.calls
        per_call_blocks = (calling.blocks - per_event_blocks * calling.events) / calling.calls

        def overhead(p: _Probe) -> tuple[float, float]:
            return (
                per_event_bytes * p.events + per_call_bytes * p.calls,
                per_event_blocks * p.events + per_call_blocks * p.calls,
            )

        # And what an empty call costs, so ``measure(lambda: None)`` is about 0.
        null = _probe(_nothing, opcodes)
        null_bytes, null_blocks = (
            max(0.0, a - b) for a, b in zip((null.bytes, null.blocks), overhead(null), strict=False)
        )
        total_bytes = total_blocks = 0.0
        peak = 0.0
        for _ in range(repeat):
            probe = _probe(call, opcodes)
            extra_bytes, extra_blocks = overhead(probe)
            total_bytes += max(0.0, probe.bytes - extra_bytes - null_bytes)
            total_blocks += max(0.0, probe.blocks - extra_blocks - null_blocks)
            peak = max(peak, probe.top - probe.start)
        return Allocation(total_bytes / repeat, total_blocks / repeat, peak)
    finally:
        if started:
            tracemalloc.stop()
