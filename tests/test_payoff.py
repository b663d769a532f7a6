"""Payoff: a plugin whose work costs more than it saves steps aside, probes now and then,
and comes back when it pays."""

from __future__ import annotations

import logging
import threading

import pytest

from sltrader_plugins.payoff import Payoff

log = logging.getLogger("test_payoff")


def scans(payoff: Payoff, count: int, saved: float = 0.0, cost: float = 0.0) -> list[bool]:
    """Run ``count`` scans, each adding ``saved`` and ``cost`` while active; whether it
    worked in each."""
    worked = []
    for _ in range(count):
        worked.append(payoff.active)
        payoff.add(saved, cost)
        payoff.end_scan()
    return worked


def test_work_that_pays_goes_on() -> None:
    payoff = Payoff("p", log, window=3)
    assert all(scans(payoff, 30, saved=2.0, cost=1.0))
    counters = payoff.counters()
    assert counters.step_asides == 0 and counters.saved_s == 60.0 and counters.cost_s == 30.0


def test_work_that_costs_steps_aside_after_one_window_and_probes_ever_more_rarely() -> None:
    payoff = Payoff("p", log, window=2, first_wait=4, max_wait=16)
    worked = scans(payoff, 2 + 4 + 2 + 8 + 2 + 16 + 2 + 16, saved=1.0, cost=2.0)
    # window, aside 4, probe 2, aside 8, probe 2, aside 16 (the cap), probe 2, aside 16
    expected = [True] * 2 + [False] * 4 + [True] * 2 + [False] * 8 + [True] * 2
    expected += [False] * 16 + [True] * 2 + [False] * 16
    assert worked == expected
    counters = payoff.counters()
    assert counters.stepped_aside and counters.step_asides == 1
    assert counters.aside_scans == 4 + 8 + 16 + 16
    assert counters.cost_s == 2.0 * 8  # only the scans it worked are judged


def test_a_probe_that_pays_brings_it_back_and_resets_the_wait() -> None:
    payoff = Payoff("p", log, window=1, first_wait=2, max_wait=8)
    scans(payoff, 1, cost=1.0)  # aside
    scans(payoff, 2)  # waits
    assert payoff.active  # probing
    scans(payoff, 1, saved=1.0)
    counters = payoff.counters()
    assert payoff.active and counters.comebacks == 1 and not counters.stepped_aside
    scans(payoff, 1, cost=1.0)  # aside again: the first wait again, not a doubled one
    assert scans(payoff, 3) == [False, False, True]


def test_it_says_so_once_at_info_then_at_debug(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="test_payoff")
    payoff = Payoff("warming", log, window=1, first_wait=1, max_wait=1)
    scans(payoff, 1, cost=1.0)  # aside
    scans(payoff, 1)  # waits
    scans(payoff, 1, saved=1.0)  # a probe that pays: back
    scans(payoff, 1, cost=1.0)  # aside again
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.INFO, logging.DEBUG, logging.DEBUG]
    assert "'warming' steps aside" in lines[0][1] and "cost 1000.0 ms" in lines[0][1]
    assert "works again" in lines[1][1]


def test_what_arrives_while_aside_is_not_judged() -> None:
    payoff = Payoff("p", log, window=1, first_wait=1, max_wait=1)
    scans(payoff, 1, cost=1.0)
    payoff.add(saved_s=100.0)  # a late answer of work done before
    payoff.end_scan()  # a probe starts
    scans(payoff, 1, cost=1.0)
    assert not payoff.active and payoff.counters().saved_s == 0.0


def test_judge_steps_aside_and_back_at_once() -> None:
    payoff = Payoff("p", log)
    payoff.judge(False, "alone")
    assert not payoff.active and payoff.metrics()["stepped_aside"] == 1.0
    payoff.judge(False, "alone")
    payoff.judge(True, "2 traders")
    assert payoff.active and payoff.metrics()["comebacks"] == 1.0
    assert payoff.metrics()["step_asides"] == 1.0


@pytest.mark.parametrize("window, first_wait, max_wait", [(0, 1, 1), (2, 1, 4), (1, 4, 2)])
def test_inconsistent_windows_are_refused(window: int, first_wait: int, max_wait: int) -> None:
    with pytest.raises(ValueError, match="window"):
        Payoff("p", log, window=window, first_wait=first_wait, max_wait=max_wait)


def test_many_threads_adding_lose_nothing() -> None:
    payoff = Payoff("p", log, window=1000, first_wait=1000, max_wait=1000)
    threads = [
        threading.Thread(target=lambda: [payoff.add(0.001, 0.0005) for _ in range(2000)])
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    payoff.judge(True, "end")
    counters = payoff.counters()
    assert counters.saved_s == pytest.approx(16 * 2000 * 0.001)
    assert counters.cost_s == pytest.approx(16 * 2000 * 0.0005)
