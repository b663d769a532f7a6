"""Whether a plugin's work pays on this trader, judged while it runs.

A plugin that speeds up one trader can slow down another: prefetching ahead of sixteen
workers that fetch in parallel anyway, or sharing series through Redis with nobody to share
with. So a plugin keeps a :class:`Payoff`: it adds what its work saved the trader and what
it cost, both in seconds of the trader's time, as it measures them, and calls
:meth:`Payoff.end_scan` once per scan. Every ``window`` scans the ledger is judged. A plugin
whose work cost more than it saved *steps aside*: :attr:`Payoff.active` turns false, the
plugin stops working (the trader runs as without it), says so once in the log and shows it
in its counters. While aside it works again for one window now and then (a *probe*: after
``first_wait`` scans, then twice as many each time it still does not pay, at most
``max_wait``); a probe that pays brings it back.

A plugin that learns otherwise whether it can pay (the shared plugin counts the traders it
could share with) calls :meth:`Payoff.judge` itself.

Thread safety: :meth:`add` may be called from any thread; :meth:`end_scan` and
:meth:`judge` from the trader's main loop. :attr:`active` is read without the lock by hot
paths: a plain attribute, written only under it.
"""

from __future__ import annotations

import logging
import threading

import attrs


@attrs.define
class PayoffCounters:
    """What a :class:`Payoff` reports (``report_metrics`` prefixes them with the plugin's name)."""

    stepped_aside: bool = False  #: aside now
    step_asides: int = 0  #: times it stepped aside
    comebacks: int = 0  #: times a probe found that it paid again
    aside_scans: int = 0  #: scans it sat out
    saved_s: float = 0.0  #: trader time its work saved, over the scans it worked
    cost_s: float = 0.0  #: trader time its work cost, over the same scans

    def as_metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in attrs.asdict(self).items()}


class Payoff:
    """The ledger of one plugin: what its work saved and cost, and whether it works.

    :param plugin: the name the plugin was loaded under, for the log line.
    :param logger: the plugin's logger.
    :param window: scans judged together.
    :param first_wait: scans aside before the first probe; doubled after each probe that
        does not pay, up to ``max_wait``.
    """

    def __init__(
        self,
        plugin: str,
        logger: logging.Logger,
        window: int = 3,
        first_wait: int = 12,
        max_wait: int = 384,
    ) -> None:
        if not 1 <= window <= first_wait <= max_wait:
            raise ValueError(
                f"need 1 <= window <= first_wait <= max_wait: {window=}, {first_wait=}, {max_wait=}"
            )
        self.plugin = plugin
        self.window = window
        self.first_wait = first_wait
        self.max_wait = max_wait
        self._log = logger
        self._lock = threading.Lock()
        self.active = True
        # Guarded by _lock:
        self._counters = PayoffCounters()
        self._saved = 0.0  # in the window being measured
        self._cost = 0.0
        self._scans = 0  # scans measured in this window, or sat out while aside
        self._wait = first_wait
        self._probing = False
        self._told = False  # the first step aside was logged at INFO; later ones at DEBUG

    def add(self, saved_s: float = 0.0, cost_s: float = 0.0) -> None:
        """Add what the plugin's work saved and cost the trader (seconds, at least 0)."""
        with self._lock:
            if self.active:  # an answer that arrives after stepping aside is not judged
                self._saved += saved_s
                self._cost += cost_s

    def end_scan(self) -> None:
        """A scan ended: judge the window when it is full; count a scan sat out."""
        with self._lock:
            self._scans += 1
            if self.active:
                if self._scans < self.window:
                    return
                saved, cost = self._saved, self._cost
            else:
                self._counters.aside_scans += 1
                if self._scans >= self._wait:
                    self._probe_locked()
                return
        why = f"in {self.window} scans it saved {saved * 1e3:.1f} ms and cost {cost * 1e3:.1f} ms"
        self.judge(saved >= cost, why)

    def judge(self, pays: bool, why: str) -> None:
        """Work on if ``pays``, else step aside; ``why`` ends the log line."""
        with self._lock:
            counters = self._counters
            counters.saved_s += self._saved
            counters.cost_s += self._cost
            self._saved = self._cost = 0.0
            self._scans = 0
            probing, self._probing = self._probing, False
            if pays:
                if counters.stepped_aside:
                    counters.comebacks += 1
                    counters.stepped_aside = False
                    self._log.log(self._level(), "plugin %r works again: %s", self.plugin, why)
                self._wait = self.first_wait
                self.active = True
                return
            if not counters.stepped_aside:
                counters.step_asides += 1
                counters.stepped_aside = True
                self._log.log(
                    self._level(),
                    "plugin %r steps aside, its work does not pay on this trader (%s): "
                    "the trader runs as without it",
                    self.plugin,
                    why,
                )
            elif probing:  # a probe that did not pay: wait longer before the next one
                self._wait = min(2 * self._wait, self.max_wait)
            self.active = False

    def _probe_locked(self) -> None:
        self._scans = 0
        self._probing = True
        self.active = True

    def _level(self) -> int:
        # Once at INFO, so that a user reading the log learns it; later changes at DEBUG.
        level = logging.DEBUG if self._told else logging.INFO
        self._told = True
        return level

    def counters(self) -> PayoffCounters:
        """A copy of the counters."""
        with self._lock:
            return attrs.evolve(self._counters)

    def metrics(self) -> dict[str, float]:
        return self.counters().as_metrics()
