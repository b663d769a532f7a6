"""Redis absent, stuck, restarted or answering errors: traders go on alone, then share again.

"Bounded" is shown by a hook returning while Redis is still stuck, never by a tight time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from shared_testkit import LIMIT, SYMBOLS, T0, Trader, digest, series, warnings

from sltrader_plugins import KlineFetch
from sltrader_shared.config import SharedConfig
from sltrader_shared.link import RedisLink, Unavailable, redacted
from sltrader_shared.shared import Shared

#: What a test waits at most for something that should take a fraction of a second.
GENEROUS_S = 30.0


def expected(close: float, symbols=SYMBOLS) -> dict[str, str]:
    return {s: digest(series(s, "1m", LIMIT, close)) for s in symbols}


@pytest.fixture
def traders(namespace) -> Iterator[Callable[..., Trader]]:
    made: list[Trader] = []

    def make(url: str, **settings: object) -> Trader:
        trader = Trader(url, namespace, **{"timeout_ms": 2000, "wait_ms": 60_000, **settings})
        made.append(trader)
        return trader

    yield make
    for trader in made:
        trader.close()


def unused_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


def test_redis_unreachable_at_start_one_line_and_the_trader_fetches(traders, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sltrader_shared")
    url = unused_url()
    a = traders(url, retry_s=3600, requests_per_minute=60_000)
    for close in (T0, T0 + 60):
        a.clock.set(close)
        assert a.read_all(SYMBOLS) == expected(close)
    assert a.exchange.total == 2 * len(SYMBOLS)
    (line,) = warnings(caplog)
    assert url in line and "retrying every 3600 s" in line
    metrics = a.metrics()
    assert metrics["fallback"] == 1 and metrics["outages"] == 1
    # The first calls (of 4 threads at once) tried; none after the first failure.
    assert 1 <= metrics["redis_errors"] <= 4
    assert metrics["served"] == 0 and metrics["published"] == 0
    assert a.plugins.faults() == {}


def test_a_stuck_redis_costs_a_bounded_wait_then_the_trader_goes_alone(
    redis_server, traders, caplog
) -> None:
    a = traders(redis_server.url, timeout_ms=100, retry_s=3600, requests_per_minute=6000)
    a.read_all(SYMBOLS[:1])
    redis_server.freeze()
    try:
        a.clock.set(T0 + 60)
        done: list[dict[str, str]] = []
        reader = threading.Thread(target=lambda: done.append(a.read_all(SYMBOLS)))
        reader.start()
        reader.join(GENEROUS_S)
        assert not reader.is_alive(), "a hook waited for a stuck Redis"
        # Redis is still stuck, and every read was answered, from the exchange.
        assert done == [expected(T0 + 60)]
        with a.plugins.exchange_request():  # paced locally meanwhile
            pass
    finally:
        redis_server.thaw()
    assert len(warnings(caplog)) == 1 and "TimeoutError" in warnings(caplog)[0]
    assert a.metrics()["fallback"] == 1


def test_a_redis_restart_mid_run_one_line_reads_go_on_then_sharing_resumes(
    redis_server, restart_redis, traders, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sltrader_shared")
    a, b = traders(redis_server.url, retry_s=0.2), traders(redis_server.url, retry_s=0.2)
    a.read_all(SYMBOLS)
    assert b.read_all(SYMBOLS) == expected(T0) and b.exchange.total == 0

    redis_server.stop()
    for close in (T0 + 60, T0 + 120):
        for trader in (a, b):
            trader.clock.set(close)
            assert trader.read_all(SYMBOLS) == expected(close)
    assert a.exchange.total == 3 * len(SYMBOLS) and b.exchange.total == 2 * len(SYMBOLS)
    assert len(warnings(caplog)) == 2  # one line per trader, however many fetches
    assert a.metrics()["fallback"] == b.metrics()["fallback"] == 1

    redis_server.start()  # empty: a crashed cache-only Redis
    close = T0 + 120
    deadline = time.monotonic() + GENEROUS_S
    while b.metrics()["served"] <= len(SYMBOLS):  # served again after the restart
        assert time.monotonic() < deadline, "sharing did not resume"
        time.sleep(0.25)  # past retry_s: the next call probes Redis
        close += 60
        for trader in (a, b):
            trader.clock.set(close)
            assert trader.read_all(SYMBOLS) == expected(close)
    assert a.metrics()["fallback"] == b.metrics()["fallback"] == 0
    assert a.metrics()["outages"] == b.metrics()["outages"] == 1
    assert len(warnings(caplog)) == 2
    resumed = [r.getMessage() for r in caplog.records if "sharing resumed" in r.getMessage()]
    assert len(resumed) == 2
    assert a.plugins.faults() == {} and b.plugins.faults() == {}


def test_redis_answering_errors_is_an_outage_too(redis_server, traders, caplog) -> None:
    a = traders(redis_server.url, retry_s=0.2)
    with redis_server.client() as admin:
        admin.config_set("maxmemory", 1)  # every write refused: OOM
        admin.config_set("maxmemory-policy", "noeviction")
        try:
            assert a.read_all(SYMBOLS[:1]) == expected(T0, SYMBOLS[:1])
            assert a.metrics()["fallback"] == 1
            assert "OutOfMemoryError" in warnings(caplog)[0]
        finally:
            admin.config_set("maxmemory", 0)
    deadline = time.monotonic() + GENEROUS_S
    close = T0
    while a.metrics()["fallback"]:
        assert time.monotonic() < deadline, "sharing did not resume"
        time.sleep(0.25)
        close += 60
        a.clock.set(close)
        a.read_all(SYMBOLS[:1])
    assert a.metrics()["published"] >= 1


def test_garbage_in_the_budget_key_is_replaced(redis_server, traders) -> None:
    a = traders(redis_server.url, requests_per_minute=60_000, burst=5)
    with redis_server.client() as client:
        client.set(f"{a.plugin.shared.config.namespace}:budget", "garbage")
        with a.plugins.exchange_request():
            pass
        assert client.type(f"{a.plugin.shared.config.namespace}:budget") == b"hash"
    assert a.metrics()["redis_errors"] == 0


def test_a_paced_fetch_keeps_its_lease(redis_server, traders) -> None:
    # 60 a minute, burst 1: the second request waits about a second, longer than the
    # 300 ms lease the fetch took before it was paced.
    a = traders(redis_server.url, requests_per_minute=60, burst=1, lease_ms=300)
    shared = a.plugin.shared
    shared.pace(1)
    fetch = KlineFetch("X", "1m", LIMIT, T0)
    assert shared.serve(fetch) is None
    shared.pace(1, fetch)  # the request of that fetch: it renews the fetch's lease
    with redis_server.client() as client:
        assert client.pttl(shared.lease_key("X", "1m", LIMIT, T0)) > 0
    assert a.metrics()["pace_waits"] == 1 and a.metrics()["pace_wait_s"] > 0


# -- the link alone ---------------------------------------------------------------------


def test_a_url_with_a_password_is_logged_without_it() -> None:
    assert redacted("redis://user:secret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redacted("redis://:secret@host/0") == "redis://:***@host/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"


def test_a_closed_link_is_unavailable() -> None:
    link = RedisLink(SharedConfig(url=unused_url()), "shared")
    link.close()
    with pytest.raises(Unavailable):
        link.run(lambda client, scripts: client.ping())
    assert link.down


def test_a_bug_in_a_probe_lets_the_next_caller_probe(redis_server) -> None:
    now = [0.0]
    link = RedisLink(SharedConfig(url=redis_server.url, retry_s=1), "shared", lambda: now[0])
    redis_server.freeze()
    try:
        with pytest.raises(Unavailable):
            link.run(lambda client, scripts: client.ping())
    finally:
        redis_server.thaw()
    now[0] = 2.0

    def bug(client: object, scripts: object) -> None:
        raise KeyError("not Redis's fault")

    with pytest.raises(KeyError):
        link.run(bug)
    assert link.run(lambda client, scripts: client.ping()) is True
    assert not link.down


def test_a_url_redis_py_refuses_is_an_outage_not_a_crash(caplog) -> None:
    # The config check is lenient about query options; redis-py is not.
    config = SharedConfig(url="redis://127.0.0.1:1/0?socket_keepalive=maybe")
    link = RedisLink(config, "shared")
    with pytest.raises(Unavailable):
        link.run(lambda client, scripts: client.ping())
    assert len(warnings(caplog)) == 1


def test_pacing_without_redis_uses_a_local_bucket_of_the_same_rate() -> None:
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    config = SharedConfig(
        url=unused_url(), requests_per_minute=600, burst=2, retry_s=3600, max_pace_wait_ms=60_000
    )
    shared = Shared(config, RedisLink(config, "shared", lambda: now[0]), sleep, lambda: now[0])
    for _ in range(12):
        shared.pace(1)
    # 2 at once (the burst), then 10 at 10 a second: about a second.
    assert 0.9 <= now[0] - 100.0 <= 1.3
    metrics = shared.metrics()
    assert metrics["pace_waits"] == 10 and metrics["pace_timeouts"] == 0
    assert metrics["fallback"] == 1


def test_a_request_that_waited_max_pace_wait_ms_goes_and_is_counted() -> None:
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    config = SharedConfig(
        url=unused_url(), requests_per_minute=60, burst=1, retry_s=3600, max_pace_wait_ms=100
    )
    shared = Shared(config, RedisLink(config, "shared", lambda: now[0]), sleep, lambda: now[0])
    shared.pace(1)
    shared.pace(1)  # would wait a second; goes after 0.1 s
    shared.pace(5)  # heavier than the burst, and the bucket is below zero: goes after 0.1 s
    assert now[0] - 100.0 == pytest.approx(0.2)
    assert shared.metrics()["pace_timeouts"] == 2
    shared.pace(0)  # nothing to pace
    assert shared.metrics()["pace_waits"] == 2


def test_a_budget_stamped_in_the_future_refills_from_now(redis_server, traders) -> None:
    # The server's clock went back (or another trader wrote a far future): the bucket
    # must refill from now on, not stall until that future comes.
    a = traders(redis_server.url, requests_per_minute=6000, burst=1, max_pace_wait_ms=60_000)
    with redis_server.client() as client:
        key = f"{a.plugin.shared.config.namespace}:budget"
        client.hset(key, mapping={"tokens": 0, "updated": 9e15})
    with a.plugins.exchange_request():
        pass
    assert a.metrics()["pace_timeouts"] == 0 and a.metrics()["pace_waits"] == 1
