"""Gross allocation of one call: every byte and block allocated, also the ones freed.

tracemalloc only reports what is alive (and a peak), so a build that allocates and
frees the same temporary a hundred times would look free. We sample tracemalloc at
every Python and C call/return of the measured thread (``sys.setprofile``): the rise of
the traced peak over the level at the previous event is what that step allocated, and
the rise in ``sys.getallocatedblocks`` plus raw (non-pymalloc) allocations counts the
blocks. Two allocations inside one C call that free in between are counted once, so the
figures are a tight lower bound. Measuring is slow: it runs outside timed code.

Watching a call must not change what it allocates, but a profiler makes CPython
allocate objects that an unwatched call never creates. Since 3.11 a Python call runs
in a frame that gets a frame *object* only when something asks for one, and a profiler
is handed one at every call; on 3.11 a profiled call of a C method through an object
(``lock.acquire()``) also gets a temporary bound method, made only to be shown to the
profiler. Counted, every Python call nested in the measured one was a block (100 to 700
bytes), so a figure grew with the number of function layers, not with what the code
allocates. The probe subtracts such an object at the ``call`` or ``c_call`` event it is
made for (recognised by its reference count: only the profiler holds it), and holds the
one of a ``return`` or ``c_return`` until the next event, where it is freed between two
reads. Not corrected, so still counted: a generator's frame object (once per
generator: it lives as long as the generator) and the locals dict a 3.11 profiler is
handed with each frame (a block or so in a function with many locals). The probe reads
its levels so that its own objects never show in the bytes, and calibrates away what
is left of them in the blocks.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from inspect import CO_ASYNC_GENERATOR, CO_COROUTINE, CO_GENERATOR, CO_ITERABLE_COROUTINE
from types import BuiltinMethodType, FrameType
from typing import Any

import attrs

_PYMALLOC_MAX = 512  # larger requests bypass pymalloc: each is one raw block
_READ_BLOCKS = 2  # ``cur`` and ``peak`` below: two ints alive while the blocks are counted
# Frame objects are made on demand (for a profiler, among others) only since 3.11;
# before, every call had one, profiled or not.
_LAZY_FRAMES = sys.version_info >= (3, 11)
# The temporary bound method of a profiled C method call lives from its c_call event to
# its c_return event on 3.11 (3.12's profiler makes and frees one per event, a pattern
# not modelled here: there it is counted, as before).
_TEMPORARY_METHODS = sys.version_info[:2] == (3, 11)
# A generator's frame object outlives each return (yield) and is reused at each resume.
_GENERATOR_FLAGS = CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR | CO_ITERABLE_COROUTINE


@attrs.frozen
class Allocation:
    bytes: float
    blocks: float
    peak: float  #: transient peak above the starting level


@attrs.frozen
class _Fresh:
    """Reference counts, as :meth:`_Probe._made` sees them, of a frame object and of
    a bound method that only the profiler holds (0: never treated as the profiler's)."""

    frame: int = 0
    method: int = 0


class _Probe:
    """The profile function; ``fresh`` says how to recognise the profiler's own objects."""

    def __init__(self, fresh: _Fresh = _Fresh()) -> None:
        self.fresh = fresh
        self.calibrating = False
        self.seen: list[tuple[str, str, int]] = []  # (event, name, refs) while calibrating
        self.bytes = 0
        self.blocks = 0
        self.events = 0
        self.start = 0
        self.top = 0
        self._last_cur = 0
        self._last_blocks = 0
        # The frame object (or bound method) of the last return, kept until the next
        # event reads its levels: freed there, inside the probe, it is not mistaken for
        # the measured code freeing memory.
        self._held: Any = None

    def begin(self) -> None:
        tracemalloc.reset_peak()
        self._last_cur = tracemalloc.get_traced_memory()[0]
        self.start = self._last_cur
        self._last_blocks = sys.getallocatedblocks()

    def _made(self, event: str, frame: FrameType, arg: Any) -> int:  # pragma: no cover
        """Bytes of the object the profiler made just before this event (0: none)."""
        # (called by the profile function, where coverage cannot trace)
        if event == "call":
            if not _LAZY_FRAMES or frame.f_code.co_flags & _GENERATOR_FLAGS:
                return 0  # a frame the call has anyway, or one that lives with a generator
            refs = sys.getrefcount(frame)
            if self.calibrating:
                self.seen.append((event, frame.f_code.co_name, refs))
            return sys.getsizeof(frame) if refs == self.fresh.frame else 0
        if event == "c_call" and type(arg) is BuiltinMethodType:
            refs = sys.getrefcount(arg)
            if self.calibrating:
                self.seen.append((event, arg.__name__, refs))
            # Else a function or a bound method the code keeps (or made itself).
            return sys.getsizeof(arg) if _TEMPORARY_METHODS and refs == self.fresh.method else 0
        return 0

    def sample(self, frame: Any, event: str, arg: Any) -> None:  # pragma: no cover
        # (runs as the profiler itself, where coverage cannot trace). Installed as a
        # bound method made once: an instance's ``__call__`` would make one per event.
        # Memory first: the reads' own results are allocated after their values are
        # taken, so this order leaves the memory figures untouched by the probe and
        # puts a constant 2 blocks (its two ints; the tuple is gone) into the count.
        cur, peak = tracemalloc.get_traced_memory()
        blocks = sys.getallocatedblocks() - _READ_BLOCKS
        made = self._made(event, frame, arg)
        rise = peak - self._last_cur - made
        if rise > 0:
            self.bytes += rise
            if rise > _PYMALLOC_MAX:
                self.blocks += 1
        grown = blocks - self._last_blocks - (0 < made <= _PYMALLOC_MAX)
        if grown > 0:
            self.blocks += grown
        if peak > self.top:
            self.top = peak
        self.events += 1
        # Free the last return's object here, between the two reads; hold this one's.
        self._held = frame if event == "return" else arg if event == "c_return" else None
        # The probe's own integers must be gone before the next level is read, so
        # both reads see the probe in the same state.
        del blocks, cur, peak, rise, grown, made
        self._last_cur = tracemalloc.get_traced_memory()[0]
        self._last_blocks = sys.getallocatedblocks()
        # Last: the transient result objects of those two reads are gone by now, so
        # the next event's peak rises only with what the measured code allocates.
        tracemalloc.reset_peak()


def _probe(call: Callable[[], Any], opcodes: bool = False, probe: _Probe | None = None) -> _Probe:
    probe = _Probe() if probe is None else probe
    sample = probe.sample

    def trace(frame: Any, event: str, arg: Any) -> Any:  # pragma: no cover - a tracer
        # Opcode events catch operators (``a + b``) that make no call at all. Calls and
        # returns are sampled by the profiler, which accounts for the frame objects.
        frame.f_trace_opcodes = True
        if event != "call" and event != "return":
            sample(frame, event, arg)
        return trace

    # Whatever tracer or profiler runs (coverage, a debugger) is put back afterwards.
    previous_trace, previous_profile = sys.gettrace(), sys.getprofile()
    probe.begin()
    if opcodes:
        sys.settrace(trace)
    sys.setprofile(sample)  # C calls (ufuncs) are seen by the profiler only
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


def _fresh_objects() -> None:
    _callee()  # its frame object is made for the profiler
    [].append(None)  # on 3.11, so is a bound method for this call


def _idle() -> None:
    x = 0
    while x < 50:
        x += 1
        len(())


def _calibrate() -> _Fresh:
    """How an object that only the profiler holds looks from inside the probe."""
    probe = _Probe()
    probe.calibrating = True
    _probe(_fresh_objects, probe=probe)
    refs = {(event, name): count for event, name, count in probe.seen}
    return _Fresh(frame=refs.get(("call", "_callee"), 0), method=refs.get(("c_call", "append"), 0))


def measure(call: Callable[[], Any], repeat: int = 1, opcodes: bool = False) -> Allocation:
    """Gross bytes and blocks allocated by ``call()``, averaged over ``repeat`` calls.

    By default the level is sampled at every Python and C call and return, which sees
    every allocation of code written with ufunc calls (as the feature engine is) but
    misses a temporary that an operator (``a + b``) creates and frees between two calls.
    ``opcodes=True`` also samples every bytecode, catching those, at the price of noise
    (a few blocks per build) that the calibration cannot remove entirely.

    Objects the profiler itself makes (frame objects, on 3.11 temporary bound methods)
    are not counted: the figure is what ``call()`` allocates when nobody watches.

    Starts tracemalloc if it is not tracing (and stops it again). The caller should have
    warmed ``call`` once so one-time caches are not counted.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        fresh = _calibrate()
        # What the probe itself costs: once per measurement (``null``: an empty call) and
        # per event (more events on a call that allocates nothing), so that
        # ``measure(lambda: None)`` is about 0.
        null = _probe(_nothing, opcodes, _Probe(fresh))
        idle = _probe(_idle, opcodes, _Probe(fresh))
        events = max(1, idle.events - null.events)
        per_event_bytes = max(0.0, (idle.bytes - null.bytes) / events)
        per_event_blocks = max(0.0, (idle.blocks - null.blocks) / events)
        null_bytes = max(0.0, null.bytes - per_event_bytes * null.events)
        null_blocks = max(0.0, null.blocks - per_event_blocks * null.events)
        total_bytes = total_blocks = 0.0
        peak = 0.0
        for _ in range(repeat):
            probe = _probe(call, opcodes, _Probe(fresh))
            total_bytes += max(0.0, probe.bytes - per_event_bytes * probe.events - null_bytes)
            total_blocks += max(0.0, probe.blocks - per_event_blocks * probe.events - null_blocks)
            peak = max(peak, probe.top - probe.start)
        return Allocation(total_bytes / repeat, total_blocks / repeat, peak)
    finally:
        if started:
            tracemalloc.stop()
