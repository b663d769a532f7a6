"""A trader alone steps aside (no Redis call per fetch), and shares again when another
trader is present."""

from __future__ import annotations

import logging

from shared_testkit import SYMBOLS, T0

from sltrader_shared import shared as shared_module


def scan(trader, symbols=SYMBOLS) -> dict[str, str]:
    with trader.plugins.scan(symbols):
        return trader.read_all(symbols)


def script_calls(redis_server) -> int:
    """Scripts run: every call of the plugin's is one."""
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


def test_a_trader_alone_steps_aside_says_so_once_and_costs_one_call_per_scan(
    traders, redis_server, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sltrader_shared")
    a = traders(share_alone=False)
    before = script_calls(redis_server)
    for minute in range(3):
        a.clock.set(T0 + 60 * minute)
        scan(a)
    # One presence call per scan, none per fetch.
    assert script_calls(redis_server) - before == 3
    assert a.exchange.total == 3 * len(SYMBOLS)
    metrics = a.metrics()
    assert metrics["stepped_aside"] == 1 and metrics["step_asides"] == 1
    assert metrics["alone_scans"] == 3 and metrics["published"] == metrics["leases"] == 0
    lines = [r.getMessage() for r in caplog.records if "steps aside" in r.getMessage()]
    assert len(lines) == 1 and "1 trader(s) present" in lines[0]
    said = a.plugins.summaries()["shared"]
    assert said.startswith("0 fetches another trader made, 0 published for others")
    assert said.endswith("alone, stepped aside 1x, 3 scans alone, aside now")
    a.close()
    assert a.plugins.summaries()["shared"] == said  # readable after close, as the counters


def test_a_trader_scanning_fast_marks_itself_present_at_most_once_a_second(
    traders, redis_server, monkeypatch
) -> None:
    monkeypatch.setattr(shared_module, "MARK_EVERY_S", 3600.0)  # every scan within it
    a = traders(share_alone=False)
    before = script_calls(redis_server)
    for minute in range(3):
        a.clock.set(T0 + 60 * minute)
        scan(a)
    assert script_calls(redis_server) - before == 1  # the first scan's mark still counts
    metrics = a.metrics()
    assert metrics["alone_scans"] == 3 and metrics["traders_present"] == 1
    monkeypatch.setattr(shared_module, "MARK_EVERY_S", 0.0)
    b = traders(share_alone=False)
    scan(a)  # past the limit: a marks itself and finds b
    assert script_calls(redis_server) - before == 3  # b's start, a's scan
    assert a.metrics()["traders_present"] == 2 and a.metrics()["comebacks"] == 1
    assert b.metrics()["stepped_aside"] == 0


def test_a_second_trader_brings_the_first_back_and_they_share(traders) -> None:
    a = traders(share_alone=False)
    scan(a)
    assert a.metrics()["stepped_aside"] == 1
    b = traders(share_alone=False)  # present from its start: it shares at once
    assert b.metrics()["stepped_aside"] == 0
    a.clock.set(T0 + 60)
    b.clock.set(T0 + 60)
    scan(a)  # a sees b: it shares again, and publishes what it fetched
    assert a.metrics()["comebacks"] == 1 and a.metrics()["published"] == len(SYMBOLS)
    assert scan(b) == scan(a)
    assert b.exchange.total == 0 and b.metrics()["served"] == len(SYMBOLS)


def test_a_trader_that_leaves_leaves_the_other_alone(traders) -> None:
    a, b = traders(share_alone=False), traders(share_alone=False)
    scan(a)
    assert a.metrics()["stepped_aside"] == 0
    b.close()  # it leaves the traders present at once
    a.clock.set(T0 + 60)
    scan(a)
    assert a.metrics()["stepped_aside"] == 1 and a.metrics()["traders_present"] == 1


def test_share_alone_keeps_a_lone_trader_sharing(traders) -> None:
    a = traders(share_alone=True)
    scan(a)
    metrics = a.metrics()
    assert metrics["stepped_aside"] == 0 and metrics["published"] == len(SYMBOLS)


def test_traders_started_together_share_from_the_first_scan(traders, monkeypatch) -> None:
    """a marks at start before b is there; its first scan marks again and finds b,
    however soon after the start it comes (the start's mark does not hold it back)."""
    monkeypatch.setattr(shared_module, "MARK_EVERY_S", 3600.0)
    a = traders(share_alone=False)
    assert a.metrics()["traders_present"] == 1
    b = traders(share_alone=False)
    scan(a)
    assert a.metrics()["traders_present"] == 2 and a.metrics()["alone_scans"] == 0
    assert scan(b) == scan(a)  # a's second scan: within the limit, it still shares
    assert a.metrics()["published"] == 2 * len(SYMBOLS) or b.metrics()["served"] > 0
