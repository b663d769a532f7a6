"""Payoff: a plugin whose work does not shorten the trader's cycles steps aside, tries
again ever more rarely, and comes back when it pays."""

from __future__ import annotations

import logging

import pytest

from sltrader_plugins.payoff import Payoff, PayoffCounters

log = logging.getLogger("test_payoff")


class Cycles:
    """A trader whose cycles take ``base`` seconds, ``gain`` less when the plugin works."""

    def __init__(self, base: float = 0.125) -> None:  # exact in binary: no rounding ties
        self.now = 0.0
        self.base = base

    def clock(self) -> float:
        return self.now

    def run(self, payoff: Payoff, count: int, gain: float) -> list[bool]:
        """``count`` cycles; whether the plugin worked in each."""
        worked = []
        for _ in range(count):
            worked.append(payoff.active)
            self.now += self.base - (gain if payoff.active else 0.0)
            payoff.end_scan()
        return worked


def make(cycles: Cycles, **options: int) -> Payoff:
    return Payoff("p", log, clock=cycles.clock, **options)


def test_the_first_cycle_works_unmeasured_then_a_trial_alternates_in_pairs() -> None:
    cycles = Cycles()
    payoff = make(cycles, pairs=3)
    worked = cycles.run(payoff, 7, gain=1 / 64)
    assert worked[0] is True
    pairs = [worked[i : i + 2] for i in range(1, 7, 2)]
    assert all(sorted(pair) == [False, True] for pair in pairs)
    assert payoff.counters().trials == 1 and payoff.active


def test_work_that_pays_goes_on_and_is_tried_ever_more_rarely() -> None:
    cycles = Cycles()
    payoff = make(cycles, pairs=1, first_wait=4, max_wait=8)
    worked = cycles.run(payoff, 1 + 2 + 4 + 2 + 8 + 2 + 8, gain=1 / 64)
    off = [i for i, w in enumerate(worked) if not w]
    assert len(off) == 3  # one cycle off in each trial of one pair, none in between
    counters = payoff.counters()
    assert counters.trials == 3 and counters.step_asides == 0
    assert counters.gain_ms == pytest.approx(15.625)


def test_work_that_costs_steps_aside_and_says_so_once(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="test_payoff")
    cycles = Cycles()
    payoff = make(cycles, pairs=2, first_wait=8)
    cycles.run(payoff, 5, gain=-1 / 32)
    assert not payoff.active
    worked = cycles.run(payoff, 8, gain=-1 / 32)
    assert not any(worked)
    counters = payoff.counters()
    assert counters.stepped_aside and counters.step_asides == 1
    assert counters.gain_ms == pytest.approx(-31.25)
    cycles.run(payoff, 4 + 16, gain=-1 / 32)  # a trial that still costs: no new line
    lines = [r for r in caplog.records if r.name == "test_payoff"]
    assert [r.levelno for r in lines] == [logging.INFO]
    assert "'p' steps aside" in lines[0].getMessage()
    assert "156.2 ms working, 125.0 ms not" in lines[0].getMessage()


def test_a_trial_that_pays_brings_it_back(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="test_payoff")
    cycles = Cycles()
    payoff = make(cycles, pairs=1, first_wait=2)
    cycles.run(payoff, 3, gain=-1 / 64)  # aside
    cycles.run(payoff, 2 + 2, gain=1 / 64)  # waits, then a trial that pays
    counters = payoff.counters()
    assert payoff.active and counters.comebacks == 1 and not counters.stepped_aside
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.DEBUG]
    assert "works again" in caplog.records[1].getMessage()


def test_judge_steps_aside_and_back_at_once_and_never_trials() -> None:
    cycles = Cycles()
    payoff = make(cycles)
    payoff.judge(False, "alone")
    assert not payoff.active and payoff.metrics()["stepped_aside"] == 1.0
    payoff.judge(False, "alone")
    payoff.judge(True, "2 traders")
    assert payoff.active and payoff.metrics()["comebacks"] == 1.0
    assert payoff.metrics()["step_asides"] == 1.0 and payoff.metrics()["trials"] == 0.0


@pytest.mark.parametrize("pairs, first_wait, max_wait", [(0, 1, 1), (1, 0, 4), (1, 4, 2)])
def test_inconsistent_settings_are_refused(pairs: int, first_wait: int, max_wait: int) -> None:
    with pytest.raises(ValueError, match="pairs"):
        Payoff("p", log, pairs=pairs, first_wait=first_wait, max_wait=max_wait)


def test_two_plugins_draw_their_trials_apart() -> None:
    a, b = Cycles(), Cycles()
    one, two = (
        Payoff("batching", log, pairs=8, clock=a.clock),
        Payoff("warming", log, pairs=8, clock=b.clock),
    )
    assert a.run(one, 17, gain=1 / 64) != b.run(two, 17, gain=1 / 64)


def test_one_trial_at_a_time_in_a_process() -> None:
    cycles = Cycles()
    one, two = make(cycles, pairs=2, first_wait=64), make(cycles, pairs=2, first_wait=64)
    states = []
    for _ in range(12):
        states.append((one.active, two.active))
        cycles.now += 0.125
        one.end_scan()
        two.end_scan()
    # the first plugin's trial (cycles 1-4), then the second's (5-8): never both off
    first = [s for s, _ in states[1:5]]
    second = [s for _, s in states[5:9]]
    assert sorted(first) == sorted(second) == [False, False, True, True]
    assert all(t for _, t in states[1:5]) and all(o for o, _ in states[5:9])


def test_without_trials_it_always_works() -> None:
    cycles = Cycles()
    payoff = make(cycles, trials=False)
    assert all(cycles.run(payoff, 40, gain=-1 / 32))
    assert payoff.metrics()["trials"] == 0.0


def test_the_counters_describe_a_step_aside_for_a_report_line():
    assert PayoffCounters().describe() == ""
    aside = PayoffCounters(stepped_aside=True, step_asides=2, comebacks=1, aside_scans=30)
    assert aside.describe() == "; stepped aside 2x, 30 scans sat out, aside now"
    back = PayoffCounters(step_asides=1, comebacks=1, aside_scans=4)
    assert back.describe() == "; stepped aside 1x, 4 scans sat out, working now"


def test_cycles_its_work_cannot_change_are_not_timed_and_hold_the_trial() -> None:
    """A warmer on a trader that scans four times per candle: its prefetches save time in
    the cycle a candle closes in, and it costs a little in the three others. Timing every
    cycle, the medians see only the cost; timing the candle's cycles, they see the gain."""

    def run(only_closes: bool) -> tuple[Payoff, list[bool]]:
        cycles = Cycles()
        payoff = make(cycles, pairs=3)
        states = []
        for n in range(1 + 4 * 6):
            closed = n % 4 == 1
            states.append(payoff.active)
            if payoff.active:
                cycles.now += cycles.base + (-1 / 16 if closed else 1 / 64)
            else:
                cycles.now += cycles.base
            payoff.end_scan(measured=closed or not only_closes)
        return payoff, states

    timing_all, _ = run(only_closes=False)
    assert timing_all.counters().step_asides == 1  # judged on noise-free cost alone
    timing_all.close()  # its next trial holds the process's one trial token
    payoff, states = run(only_closes=True)
    counters = payoff.counters()
    assert counters.trials == 1 and counters.step_asides == 0 and payoff.active
    assert counters.gain_ms == pytest.approx(62.5)
    # The state changes only at a measured cycle's end: each candle's four cycles share one.
    assert False in states
    assert all(states[n] == states[n + 1] for n in range(1, 24) if n % 4 != 1)
