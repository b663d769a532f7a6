"""Traders in separate processes (``multiprocessing``, spawn), meeting only in Redis."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from shared_testkit import (
    LIMIT,
    PATIENT,
    SYMBOLS,
    T0,
    Trader,
    digest,
    lease_holder_process,
    pacer_process,
    reader_process,
    series,
)

SPAWN = multiprocessing.get_context("spawn")
#: How long a child may take, start-up included, on a loaded two-core machine.
CHILD_BOUND_S = 120.0


def run_all(processes: list[Any], results: Any) -> list[dict[str, Any]]:
    for p in processes:
        p.start()
    try:
        out = [results.get(timeout=CHILD_BOUND_S) for _ in processes]
    finally:
        for p in processes:
            p.join(timeout=CHILD_BOUND_S)
            if p.is_alive():  # pragma: no cover - only when a test already failed
                p.kill()
    assert all(p.exitcode == 0 for p in processes)
    return out


@pytest.mark.parametrize("n", [2, 4])
def test_one_exchange_fetch_per_series_per_close_across_processes(
    redis_server, namespace, n: int
) -> None:
    closes = [T0, T0 + 60, T0 + 120]
    barrier = SPAWN.Barrier(n)
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=reader_process,
            args=(redis_server.url, namespace, closes, 4, barrier, results),
        )
        for _ in range(n)
    ]
    out = run_all(processes, results)
    fetches: Counter[str] = Counter()
    for result in out:
        fetches.update(result["fetches"])
    # Exactly one fetch of each series at each close, whichever process made it.
    assert sorted(fetches) == sorted(repr((s, "1m", c)) for s in SYMBOLS for c in closes)
    assert set(fetches.values()) == {1}
    # Every process got the same series, bit for bit the exchange's.
    expected = {repr(c): {s: digest(series(s, "1m", LIMIT, c)) for s in SYMBOLS} for c in closes}
    assert all(result["digests"] == expected for result in out)
    served = sum(result["metrics"]["served"] for result in out)
    assert served == (n - 1) * len(SYMBOLS) * len(closes)
    assert all(result["metrics"]["redis_errors"] == 0 for result in out)


def test_a_killed_lease_holder_costs_one_lease_then_one_fetch(redis_server, namespace) -> None:
    holding = SPAWN.Event()
    holder = SPAWN.Process(
        target=lease_holder_process, args=(redis_server.url, namespace, SYMBOLS[0], holding)
    )
    holder.start()
    try:
        assert holding.wait(CHILD_BOUND_S), "the holder never fetched"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # The dead holder's lease is still there, until its lease_ms (HOLDER_LEASE_MS) runs out.
    lease = f"{namespace}:lease:{SYMBOLS[0]}:1m:{LIMIT}:{T0!r}"
    with redis_server.client() as client:
        assert client.pttl(lease) > 0
    a = Trader(redis_server.url, namespace, latency=0.02, **PATIENT)
    b = Trader(redis_server.url, namespace, latency=0.02, **PATIENT)
    try:
        start = time.monotonic()
        got: list[dict[str, str]] = []
        readers = [
            threading.Thread(target=lambda t=t: got.append(t.read_all(SYMBOLS[:1]))) for t in (a, b)
        ]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
        assert time.monotonic() - start < 30  # generous: the lease lived 3 s
        assert a.exchange.total + b.exchange.total == 1
        assert got[0] == got[1] == {SYMBOLS[0]: digest(series(SYMBOLS[0], "1m", LIMIT, T0))}
        assert a.metrics()["lease_waits"] + b.metrics()["lease_waits"] == 2
        assert a.metrics()["lease_timeouts"] + b.metrics()["lease_timeouts"] == 0
    finally:
        a.close()
        b.close()


def test_the_budget_holds_under_contention(redis_server, namespace) -> None:
    per_minute, burst, seconds = 600.0, 5, 2.0  # 10 a second
    settings = {
        "requests_per_minute": per_minute,
        "burst": burst,
        "max_pace_wait_ms": 120_000,  # nothing goes without a grant in this test
        "timeout_ms": 2000,
    }
    n, threads = 4, 3
    barrier = SPAWN.Barrier(n)
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=pacer_process,
            args=(redis_server.url, namespace, settings, threads, seconds, barrier, results),
        )
        for _ in range(n)
    ]
    out = run_all(processes, results)
    grants = sorted(t for result in out for t in result["grants"])
    rate = per_minute / 60
    # A grant is stamped when its thread wakes, a little after Redis granted it: allow a
    # generous slack in each window rather than a tight bound on a loaded machine.
    slack_s = 1.0
    for window in (0.5, 1.0, 2.0):
        j = 0
        for i, t in enumerate(grants):
            while grants[j] < t - window:
                j += 1
            assert i - j + 1 <= rate * (window + slack_s) + burst, (window, i - j + 1)
    span = grants[-1] - grants[0]
    assert len(grants) <= rate * (span + slack_s) + burst
    assert len(grants) > burst  # it paced, it did not stop
    metrics = [result["metrics"] for result in out]
    assert sum(m["pace_waits"] for m in metrics) > 0
    assert sum(m["pace_timeouts"] for m in metrics) == 0
    assert all(m["fallback"] == 0 for m in metrics)
