"""Traders in one process sharing through a real Redis: what is served, when, and to whom.

Each ``Trader`` is a whole trader (its own plugin manager, plugin instance, cache and
exchange), so two of them in one process share only through Redis, as two processes do.
"""

from __future__ import annotations

import threading

import pytest
from shared_testkit import LIMIT, SYMBOLS, T0, Exchange, FakeClock, Trader, digest, series

from sltrader_plugins import KlineFetch, Klines
from sltrader_shared import codec
from sltrader_shared.config import SharedConfig
from sltrader_shared.link import RedisLink
from sltrader_shared.shared import Shared


def test_a_series_fetched_by_one_trader_is_served_to_another(traders) -> None:
    a, b = traders(), traders()
    got_a = a.read_all(SYMBOLS)
    got_b = b.read_all(SYMBOLS)
    assert a.exchange.total == len(SYMBOLS)
    assert b.exchange.total == 0
    assert got_a == got_b
    # Bit for bit what the exchange answers.
    assert got_b == {s: digest(series(s, "1m", LIMIT, T0)) for s in SYMBOLS}
    assert a.metrics()["published"] == len(SYMBOLS) and a.metrics()["leases"] == len(SYMBOLS)
    assert b.metrics()["served"] == len(SYMBOLS)
    assert b.plugins.faults() == {}


def test_every_close_is_fetched_once_and_served_to_the_others(traders) -> None:
    a, b, c = traders(), traders(), traders()
    for i, close in enumerate((T0, T0 + 60, T0 + 120)):
        first = (a, b, c)[i % 3]
        for trader in (a, b, c):
            trader.clock.set(close)
        first.read_all(SYMBOLS)
        for trader in (a, b, c):
            assert trader.read_all(SYMBOLS) == first.read_all(SYMBOLS)
    assert a.exchange.total + b.exchange.total + c.exchange.total == 3 * len(SYMBOLS)
    assert sum(t.metrics()["served"] for t in (a, b, c)) == 2 * 3 * len(SYMBOLS)


def test_a_stale_series_is_never_served(traders) -> None:
    a, b = traders(), traders()
    a.read_all(SYMBOLS[:1])  # published for T0
    b.clock.set(T0 + 60)  # a candle closed since: the T0 series is stale for b
    got = b.read_all(SYMBOLS[:1])
    assert b.exchange.total == 1
    assert got[SYMBOLS[0]] == digest(series(SYMBOLS[0], "1m", LIMIT, T0 + 60))
    assert b.metrics()["served"] == 0


def test_a_series_whose_candle_has_not_closed_for_the_asker_is_never_served(traders) -> None:
    a, b = traders(), traders()
    a.clock.set(T0 + 60)
    a.read_all(SYMBOLS[:1])  # published for T0 + 60
    got = b.read_all(SYMBOLS[:1])  # b's clock is a minute behind: T0 + 60 has not closed
    assert b.exchange.total == 1 and b.metrics()["served"] == 0
    assert got[SYMBOLS[0]] == digest(series(SYMBOLS[0], "1m", LIMIT, T0))
    # And b's older series does not replace a's newer one.
    assert b.metrics()["published"] == 0
    c = traders()
    c.clock.set(T0 + 60)
    c.read_all(SYMBOLS[:1])
    assert c.exchange.total == 0


def test_one_fetch_per_series_while_many_threads_of_two_traders_read(traders) -> None:
    a, b = traders(latency=0.02), traders(latency=0.02)
    results: list[dict[str, str]] = []
    go = threading.Barrier(2)

    def run(trader: Trader) -> None:
        go.wait()
        results.append(trader.read_all(SYMBOLS, threads=8, repeat=4))

    threads = [threading.Thread(target=run, args=(t,)) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]
    assert a.exchange.total + b.exchange.total == len(SYMBOLS)
    assert a.metrics()["served"] + b.metrics()["served"] == len(SYMBOLS)


def test_a_failed_fetch_frees_the_lease_and_a_waiter_fetches(traders, redis_server) -> None:
    a, b = traders(), traders()
    a.exchange.fail = True
    with pytest.raises(ConnectionError):
        a.cache.get_klines(SYMBOLS[0], "1m")
    lease = a.plugin.shared.lease_key(SYMBOLS[0], "1m", LIMIT, T0)
    with redis_server.client() as client:
        assert client.exists(lease) == 0  # released, not left to expire
    b.read_all(SYMBOLS[:1])
    assert b.exchange.total == 1 and b.metrics()["leases"] == 1


def test_a_waiter_gives_up_after_wait_ms_and_fetches_itself(traders, redis_server) -> None:
    a = traders()
    lease = a.plugin.shared.lease_key(SYMBOLS[0], "1m", LIMIT, T0)
    with redis_server.client() as client:
        client.set(lease, "someone-else", px=60_000)  # a holder that never publishes
    b = traders(wait_ms=50)
    got = b.read_all(SYMBOLS[:1], threads=1, repeat=1)
    assert b.exchange.total == 1
    assert got[SYMBOLS[0]] == digest(series(SYMBOLS[0], "1m", LIMIT, T0))
    assert b.metrics()["lease_waits"] == 1 and b.metrics()["lease_timeouts"] == 1
    assert b.metrics()["published"] == 1  # it still shares what it fetched
    with redis_server.client() as client:
        assert client.get(lease) == b"someone-else"  # not its lease to delete
    c = traders()
    c.read_all(SYMBOLS[:1])
    assert c.exchange.total == 0


@pytest.mark.parametrize("wait_ms", [50, 1500, None], ids=["50ms", "1500ms", "default"])
def test_a_waiter_on_a_held_lease_waits_wait_ms_by_its_clock_no_longer(
    redis_server, namespace, wait_ms
) -> None:
    # The trader's clock is injected and passes only in its sleeps: the time it waited on
    # a lease that is never freed is exactly its wait_ms (jittered polls, the last one cut
    # at the deadline), not a multiple of it. The traders of the other tests wait 60 s
    # (PATIENT), so there a wrong unit would go unseen.
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    settings = {} if wait_ms is None else {"wait_ms": wait_ms}
    config = SharedConfig(url=redis_server.url, namespace=namespace, **settings)
    expected_s = 6.0 if wait_ms is None else wait_ms / 1000  # the documented default: 6000 ms
    shared = Shared(config, RedisLink(config, "shared"), sleep, lambda: now[0])
    fetch = KlineFetch(SYMBOLS[0], "1m", LIMIT, T0)
    with redis_server.client() as client:
        client.set(shared.lease_key(SYMBOLS[0], "1m", LIMIT, T0), "someone-else", px=60_000)
    try:
        assert shared.serve(fetch) is None  # gave up: fetch it yourself
        assert now[0] - 100.0 == pytest.approx(expected_s, abs=1e-6)
        metrics = shared.metrics()
        assert metrics["lease_waits"] == 1 and metrics["lease_timeouts"] == 1
    finally:
        shared.close()


def test_a_lease_that_expires_without_a_series_is_taken_over(traders, redis_server) -> None:
    a = traders()
    lease = a.plugin.shared.lease_key(SYMBOLS[0], "1m", LIMIT, T0)
    with redis_server.client() as client:
        client.set(lease, "dead-holder", px=300)
    a.read_all(SYMBOLS[:1], threads=1, repeat=1)
    assert a.exchange.total == 1
    assert a.metrics()["lease_waits"] == 1 and a.metrics()["leases"] == 1
    assert a.metrics()["lease_timeouts"] == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage",
        b"SLK1" + b"\x00" * 12,  # a header, for close 0, with no candles
        codec.HEADER.pack(codec.MAGIC, T0, 3) + b"\x00" * 10,  # the right close, cut short
    ],
)
def test_garbage_in_the_series_key_is_fetched_over_and_replaced(
    traders, redis_server, garbage: bytes
) -> None:
    a = traders()
    key = a.plugin.shared.series_key(SYMBOLS[0], "1m", LIMIT)
    with redis_server.client() as client:
        client.set(key, garbage)
    got = a.read_all(SYMBOLS[:1], threads=1, repeat=1)
    assert got[SYMBOLS[0]] == digest(series(SYMBOLS[0], "1m", LIMIT, T0))
    assert a.exchange.total == 1 and a.metrics()["published"] == 1
    assert a.plugins.faults() == {}
    b = traders()
    b.read_all(SYMBOLS[:1])
    assert b.exchange.total == 0 and b.metrics()["served"] == 1


def test_a_key_of_another_type_is_no_series_and_is_replaced(traders, redis_server) -> None:
    a = traders()
    key = a.plugin.shared.series_key(SYMBOLS[0], "1m", LIMIT)
    with redis_server.client() as client:
        client.hset(key, "not", "a series")
    a.read_all(SYMBOLS[:1])
    b = traders()
    b.read_all(SYMBOLS[:1])
    assert (a.exchange.total, b.exchange.total) == (1, 0)
    assert a.metrics()["redis_errors"] == 0


def test_a_series_that_claims_the_close_but_is_not_that_series_is_not_served(
    traders, redis_server
) -> None:
    # A forged header: the close asked for, candles of another close. The host would
    # refuse it as this plugin's fault; the plugin refuses it first.
    a = traders()
    other = codec.encode(series(SYMBOLS[0], "1m", LIMIT, T0 - 60))
    forged = codec.HEADER.pack(codec.MAGIC, T0, codec.HEADER.unpack_from(other)[2])
    with redis_server.client() as client:
        client.set(a.plugin.shared.series_key(SYMBOLS[0], "1m", LIMIT), forged + other[16:])
    a.read_all(SYMBOLS[:1])
    assert a.exchange.total == 1 and a.metrics()["bad_series"] == 1
    assert a.plugins.faults() == {}


def test_what_cannot_be_served_is_not_published(traders, redis_server) -> None:
    a = traders()
    shared = a.plugin.shared
    empty = series("X", "1m", 0, T0)
    x, y = KlineFetch("X", "1m", LIMIT, T0), KlineFetch("Y", "1m", 10, T0)
    shared.serve(x)
    shared.fetched(x, empty)  # no candles: nothing to serve
    shared.serve(y)
    shared.fetched(y, series("Z", "1m", 10, T0))  # another symbol
    shared.fetched(KlineFetch("W", "1m", 10, T0), None)  # nothing held, nothing fetched
    with redis_server.client() as client:
        assert client.keys(f"{shared.config.namespace}:series:*") == []
    assert a.metrics()["published"] == 0


def test_limit_is_part_of_the_series(traders) -> None:
    a, b = traders(), traders()
    fetch = KlineFetch("X", "1m", 10, T0)
    assert a.plugin.shared.serve(fetch) is None
    a.plugin.shared.fetched(fetch, series("X", "1m", 10, T0))
    assert b.plugin.shared.serve(KlineFetch("X", "1m", 20, T0)) is None  # a longer one
    served = b.plugin.shared.serve(KlineFetch("X", "1m", 10, T0))
    assert isinstance(served, Klines) and digest(served) == digest(series("X", "1m", 10, T0))


def test_shutdown_frees_the_leases_still_held(traders, redis_server) -> None:
    a = traders()
    assert a.plugin.shared.serve(KlineFetch("X", "1m", LIMIT, T0)) is None  # holds the lease
    lease = a.plugin.shared.lease_key("X", "1m", LIMIT, T0)
    with redis_server.client() as client:
        assert client.exists(lease) == 1
        a.close()
        assert client.exists(lease) == 0
    assert a.plugin.shared is None
    assert a.plugins.hook.serve_klines(fetch=KlineFetch("X", "1m", LIMIT, T0)) is None


def test_the_counters_are_still_readable_after_close(traders) -> None:
    a, b = traders(), traders()
    a.read_all(SYMBOLS[:2])
    b.read_all(SYMBOLS[:2])
    before = b.plugins.metrics()
    b.close()  # a trader writes its report after shutdown
    assert b.plugins.metrics() == before and before["shared.served"] == 2


def test_metrics_put_what_was_saved_first(traders) -> None:
    a, b = traders(), traders()
    a.read_all(SYMBOLS[:1])
    b.read_all(SYMBOLS[:1])
    metrics = b.plugins.metrics()
    assert list(metrics)[:3] == ["shared.served", "shared.published", "shared.leases"]
    assert metrics["shared.served"] == 1 and metrics["shared.fallback"] == 0
    assert all(isinstance(v, float | int) for v in metrics.values())


def test_an_exchange_that_lags_publishes_under_its_own_close(traders) -> None:
    # The exchange has not got the newest candle yet: what it answered is published for
    # the close it reaches, and is not served for the newer one.
    clock = FakeClock(T0 + 60)
    lagging = Exchange(FakeClock(T0))
    a = traders(fetch=lagging.fetch)
    a.clock.set(clock.now())
    fetch = KlineFetch("X", "1m", LIMIT, T0 + 60)
    assert a.plugin.shared.serve(fetch) is None
    a.plugin.shared.fetched(fetch, lagging.fetch("X", "1m", LIMIT))
    b = traders()
    assert b.plugin.shared.serve(KlineFetch("X", "1m", LIMIT, T0)) is not None
    c = traders(wait_ms=0)
    assert c.plugin.shared.serve(KlineFetch("X", "1m", LIMIT, T0 + 60)) is None
