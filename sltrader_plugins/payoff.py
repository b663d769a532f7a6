"""Whether a plugin's work pays on this trader, measured while it runs.

A plugin that speeds up one trader can slow down another: prefetching ahead of sixteen
workers that fetch in parallel anyway, or sharing series through Redis with nobody to share
with. So a plugin keeps a :class:`Payoff` and calls :meth:`Payoff.end_scan` at the end of
every scan. The payoff measures the trader's cycles (from one scan's end to the next, so
everything the trader does in a cycle counts; only those the plugin's work can change, if
it says which) and runs *trials*: for a few pairs of cycles
the plugin works in one and not in the other, in an order drawn at random for each pair;
one plugin's trial at a time in a process, so that none times another's work. A plugin
whose cycles were not shorter when it worked (the medians) *steps aside*:
:attr:`Payoff.active` turns false, the plugin stops working (the trader runs as without
it), says so once in the log and shows it in its counters. A trial comes again after
``first_wait`` cycles, then twice as many each time the verdict stands, at most
``max_wait``; a trial that finds the plugin pays again brings it back.

No decision depends on it: a plugin's work never changes one, by the contract.

A plugin that knows by other means whether it can pay (the shared plugin counts the traders
it could share with) calls :meth:`Payoff.judge` itself and never :meth:`Payoff.end_scan`.

Thread safety: :meth:`end_scan` and :meth:`judge` are called from the trader's main loop;
:attr:`active` is read without the lock by hot paths in any thread: a plain attribute,
written only under it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

import attrs

from sltrader_plugins.tally import Tally


class _TrialToken:
    """One trial at a time in a process: two plugins' trials at once would each time the
    other's work as well as their own. Held by a weak reference: a payoff dropped in its
    trial (a plugin gone without ``close``) holds nobody up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: weakref.ref[object] | None = None

    def take(self, owner: object) -> bool:
        with self._lock:
            if self._holder is None or self._holder() is None:
                self._holder = weakref.ref(owner)
            return self._holder() is owner

    def give_back(self, owner: object) -> None:
        with self._lock:
            if self._holder is not None and self._holder() is owner:
                self._holder = None


_TRIALS = _TrialToken()


@attrs.define
class PayoffCounters:
    """What a :class:`Payoff` reports (``report_metrics`` prefixes them with the plugin's name)."""

    stepped_aside: bool = False  #: aside now
    step_asides: int = 0  #: times it stepped aside
    comebacks: int = 0  #: times a trial found that it paid again
    trials: int = 0  #: trials judged
    aside_scans: int = 0  #: scans it sat out (in trials too)
    #: the last trial's median cycle without the plugin's work less with it (ms): what
    #: its work saved a cycle; below 0, what it cost
    gain_ms: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in attrs.asdict(self).items()}

    def describe(self) -> str:
        """How the plugin stood aside this run, to end its ``report_summary`` line
        (``""``: it never did)."""
        if not self.step_asides:
            return ""
        now = "aside now" if self.stepped_aside else "working now"
        return f"; stepped aside {self.step_asides}x, {self.aside_scans} scans sat out, {now}"


class Payoff:
    """Whether one plugin works now, and the trials that decide it.

    :param plugin: the name the plugin was loaded under, for the log line and the order
        of its trials.
    :param logger: the plugin's logger.
    :param pairs: pairs of cycles in a trial.
    :param first_wait: cycles between trials; doubled each time the verdict stands, up to
        ``max_wait``.
    :param trials: false: never trial, always work (until :meth:`judge` says otherwise).
    :param clock: the clock of the cycles (tests replace it).
    """

    def __init__(
        self,
        plugin: str,
        logger: logging.Logger,
        pairs: int = 3,
        first_wait: int = 16,
        max_wait: int = 512,
        trials: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not (pairs >= 1 and 1 <= first_wait <= max_wait):
            raise ValueError(
                f"need 1 <= pairs and 1 <= first_wait <= max_wait: {pairs=}, {first_wait=}, "
                f"{max_wait=}"
            )
        self.plugin = plugin
        self.pairs = pairs
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.trials = trials
        self._log = logger
        self._clock = clock
        self._lock = threading.Lock()
        self.active = True
        # Guarded by _lock:
        self._random = random.Random(plugin)  # its own draws: plugins' trials do not align
        self._counters = PayoffCounters()
        self._last_end: float | None = None  # perf_counter at the last scan's end
        self._plan: deque[bool] = deque()  # the states of the trial's cycles still to run
        self._cycles: dict[bool, list[float]] = {True: [], False: []}
        # Cycles left before the next trial: the first (a cold start) is never measured.
        self._waiting = 1
        self._wait = first_wait
        self._changes = Tally()  # the first change is logged at INFO, later ones at DEBUG

    def end_scan(self, measured: bool = True) -> None:
        """A scan ended: measure the cycle that ended with it, choose the next one's state.

        :param measured: whether the plugin's work could change this cycle's length (a
            warmer's: a candle closed in it). A cycle that could not is neither timed nor
            moves a trial on, and the plugin keeps its state through it: on a trader that
            scans several times per candle, a trial of such cycles would judge noise.
        """
        now = self._clock()
        with self._lock:
            last, self._last_end = self._last_end, now
            if not self.active:
                self._counters.aside_scans += 1
            if not self.trials:
                return
            if self._waiting:
                self._waiting -= 1
                if not self._waiting:
                    if _TRIALS.take(self):
                        self._start_trial_locked()
                    else:  # another plugin's trial runs: try again at the next scan
                        self._waiting = 1
                return
            if not measured:
                return
            if last is not None:
                self._cycles[self.active].append(now - last)
            if self._plan:
                self.active = self._plan.popleft()
                return
            on, off = map(_median, (self._cycles[True], self._cycles[False]))
            self._counters.trials += 1
            self._counters.gain_ms = (off - on) * 1e3
        why = f"median cycle {on * 1e3:.1f} ms working, {off * 1e3:.1f} ms not"
        self.judge(on <= off, why)

    def _start_trial_locked(self) -> None:
        plan = []
        for _ in range(self.pairs):
            first = self._random.random() < 0.5
            plan += [first, not first]
        self._cycles = {True: [], False: []}
        self.active = plan[0]
        self._plan = deque(plan[1:])

    def judge(self, pays: bool, why: str) -> None:
        """Work from now on if ``pays``, else step aside; ``why`` ends the log line."""
        message: str | None = None
        with self._lock:
            _TRIALS.give_back(self)
            counters = self._counters
            if pays == (not counters.stepped_aside):
                self._wait = min(2 * self._wait, self.max_wait)  # the verdict stands
            else:
                self._wait = self.first_wait
                if pays:
                    counters.comebacks += 1
                    message = "plugin %r works again (%s)"
                else:
                    counters.step_asides += 1
                    message = (
                        "plugin %r steps aside, its work does not pay on this trader (%s): "
                        "the trader runs as without it"
                    )
                level = logging.INFO if self._changes.add() else logging.DEBUG
            counters.stepped_aside = not pays
            self.active = pays
            self._waiting = self._wait
        if message is not None:  # outside the lock: a log handler is foreign code
            self._log.log(level, message, self.plugin, why)

    def close(self) -> None:
        """The plugin stops: another plugin's trial may run."""
        _TRIALS.give_back(self)

    def counters(self) -> PayoffCounters:
        """A copy of the counters."""
        with self._lock:
            return attrs.evolve(self._counters)

    def metrics(self) -> dict[str, float]:
        """The counters for ``report_metrics`` (``stepped_aside``, ``trials``, ...)."""
        return self.counters().as_metrics()


def _median(values: list[float]) -> float:
    # not statistics.median: importing statistics (decimal, fractions) costs every
    # trader's start-up a few ms, for three numbers
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
