"""What another client may leave under the plugin's keys, or how a Redis may refuse it.

A series header no trader could have written, numbers in the budget that no bucket
holds, a Redis that wants a password: each is repaired or reported once, and never stops
sharing or pacing for good.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import redis
from shared_testkit import LIMIT, PATIENT, SYMBOLS, T0, Trader, digest, series, warnings

from sltrader_plugins import Klines
from sltrader_shared import codec
from sltrader_shared import link as redis_link
from sltrader_shared.config import SharedConfig
from sltrader_shared.link import RedisLink, Unavailable
from sltrader_shared.shared import Shared


def header(close: float) -> bytes:
    """A series key's value that is only a header claiming ``close`` (no candles)."""
    return codec.HEADER.pack(codec.MAGIC, close, 0)


# -- a series header no trader could have written ---------------------------------------

#: A year after the server's clock (the test's server runs on this machine's clock).
A_YEAR_AHEAD = "a year ahead"


@pytest.mark.parametrize("close", [math.nan, math.inf, -math.inf, 1e300, A_YEAR_AHEAD])
def test_a_series_header_no_trader_could_have_written_is_replaced(
    traders, redis_server, caplog, close: float | str
) -> None:
    # Before, a header claiming a later close (or NaN) refused every publish as newer:
    # the key kept no TTL and the series was never shared again.
    if close == A_YEAR_AHEAD:
        close = time.time() + 365 * 86_400
    a = traders()
    key = a.plugin.shared.series_key(SYMBOLS[0], "1m", LIMIT)
    with redis_server.client() as client:
        client.set(key, header(float(close)))
        assert a.read_all(SYMBOLS[:1], threads=1, repeat=1) == {
            SYMBOLS[0]: digest(series(SYMBOLS[0], "1m", LIMIT, T0))
        }
        assert a.exchange.total == 1 and a.metrics()["published"] == 1
        assert a.metrics()["bad_headers"] == 1
        assert 0 < client.pttl(key) <= 2 * 60_000  # two candles, as every series key
    b = traders()
    b.read_all(SYMBOLS[:1])
    assert b.exchange.total == 0 and b.metrics()["served"] == 1
    (line,) = warnings(caplog)
    assert key in line and "bad_headers" in line


def test_garbage_headers_are_logged_once_and_each_counted(traders, redis_server, caplog) -> None:
    a = traders()
    with redis_server.client() as client:
        for symbol in SYMBOLS:
            client.set(a.plugin.shared.series_key(symbol, "1m", LIMIT), header(math.nan))
    a.read_all(SYMBOLS)
    assert a.metrics()["bad_headers"] == len(SYMBOLS)
    assert a.metrics()["published"] == len(SYMBOLS)
    assert len(warnings(caplog)) == 1


def test_a_header_a_little_ahead_is_a_trader_whose_clock_runs_ahead(traders, redis_server) -> None:
    # Within two candles of the server's clock: another trader's newer series, which an
    # older one must not replace.
    a = traders()
    key = a.plugin.shared.series_key(SYMBOLS[0], "1m", LIMIT)
    ahead = header(time.time() + 30)
    with redis_server.client() as client:
        client.set(key, ahead)
        a.read_all(SYMBOLS[:1], threads=1, repeat=1)
        assert client.get(key) == ahead
    assert a.exchange.total == 1
    assert a.metrics()["published"] == 0 and a.metrics()["bad_headers"] == 0


def test_a_header_that_is_not_a_close_time_is_never_decoded() -> None:
    # Even when the close asked for is the same non-number: no candle closes there.
    open_time = np.array([T0 - 120, math.inf])
    ones = np.ones(2)
    value = codec.encode(Klines("X", "1m", open_time, ones, ones, ones, ones, ones))
    with pytest.raises(ValueError, match="not a close time"):
        codec.decode(value, "X", "1m", 10, math.inf)


# -- numbers in the budget that no bucket holds ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tokens", "-1e300"),
        ("tokens", "-inf"),
        ("tokens", "nan"),
        ("tokens", "inf"),
        ("tokens", "garbage"),
        ("updated", "nan"),
        ("updated", "-inf"),
        ("updated", "inf"),
        ("updated", "1e300"),
        ("updated", "-1"),
        ("updated", "garbage"),
    ],
)
def test_garbage_in_the_budget_is_reset_and_requests_are_still_paced(
    redis_server, namespace, field: str, value: str
) -> None:
    # Before, tokens -1e300 made the wait overflow Redis's integer reply to a negative,
    # which pace read as a grant: every request went at once, for good.
    now = [100.0]

    def sleep(seconds: float) -> None:  # time passes for the trader, not for Redis:
        now[0] += seconds  # a request that is not granted at once waits, then goes

    config = SharedConfig(
        url=redis_server.url, namespace=namespace, requests_per_minute=60, burst=1
    )
    shared = Shared(config, RedisLink(config, "shared"), sleep, lambda: now[0])
    try:
        shared.pace(1)  # the bucket is there, and empty
        start = time.monotonic()
        with redis_server.client() as client:
            client.hset(f"{namespace}:budget", field, value)
        requests = 20
        for _ in range(requests):
            shared.pace(1)
        refilled = math.floor(time.monotonic() - start)  # 1 a second, on Redis's clock
        metrics = shared.metrics()
        granted_at_once = requests - metrics["pace_waits"]
        assert granted_at_once <= config.burst + refilled
        assert metrics["budget_resets"] == 1
        assert metrics["redis_errors"] == 0 and metrics["fallback"] == 0
        with redis_server.client() as client:
            bucket = client.hgetall(f"{namespace}:budget")
        assert all(math.isfinite(float(bucket[k])) for k in (b"tokens", b"updated"))
    finally:
        shared.close()


@pytest.mark.parametrize("per_ms", [1e-300, 1e-9])
def test_the_wait_the_budget_answers_is_never_beyond_max_pace_wait_ms(
    redis_server, namespace, per_ms: float
) -> None:
    # A rate so slow that the wait would not fit Redis's integer reply (1e-300), or would
    # be days (1e-9): at most max_pace_wait_ms, never 0 (a grant).
    link = RedisLink(SharedConfig(url=redis_server.url, max_pace_wait_ms=2500), "shared")
    keys, args = [f"{namespace}:budget"], [repr(per_ms), 1, 1, "0"]
    try:
        waits = [link.run(lambda _, s: s.take(keys=keys, args=args)) for _ in range(3)]
    finally:
        link.close()
    assert waits == [0, 2500, 2500]


# -- a Redis that wants a password -------------------------------------------------------


def test_a_redis_that_needs_a_password_says_so_in_one_line(
    redis_server_with_password, namespace, caplog
) -> None:
    # Before, the operator read redis-py's "HELLO must be called with the client already
    # authenticated, otherwise the HELLO AUTH <user> <pass> option can be used ...".
    server = redis_server_with_password
    trader = Trader(server.url, namespace, retry_s=3600, requests_per_minute=60_000)
    try:
        assert trader.read_all(SYMBOLS) == {s: digest(series(s, "1m", LIMIT, T0)) for s in SYMBOLS}
        assert trader.metrics()["fallback"] == 1
    finally:
        trader.close()
    hint = f"redis://:PASSWORD@127.0.0.1:{server.port}/0"
    assert warnings(caplog) == [
        f"shared: Redis at {server.url} refused the connection: it needs a password (put it "
        f"in the url, {hint}); each trader fetches and paces on its own, retrying every 3600 s"
    ]
    assert server.password not in caplog.text


def test_a_wrong_password_says_so_without_showing_it(redis_server_with_password, caplog) -> None:
    server = redis_server_with_password
    url = f"redis://:not-{server.password}@127.0.0.1:{server.port}/0"
    now = [0.0]
    link = RedisLink(SharedConfig(url=url, retry_s=1), "shared", lambda: now[0])
    for _ in range(3):  # every one probes Redis, and is refused: one outage, one line
        with pytest.raises(Unavailable):
            link.run(lambda client, _: client.ping())
        now[0] += 2
    assert link.stats()["redis_errors"] == 3
    (line,) = warnings(caplog)
    assert "the user or password in the url is wrong" in line
    assert f"redis://:***@127.0.0.1:{server.port}/0" in line
    assert server.password not in caplog.text  # nor the wrong one, which holds it


def test_the_right_password_shares(redis_server_with_password, namespace, caplog) -> None:
    server = redis_server_with_password
    url = f"redis://:{server.password}@127.0.0.1:{server.port}/0"
    a, b = Trader(url, namespace, **PATIENT), Trader(url, namespace, **PATIENT)
    try:
        assert a.read_all(SYMBOLS) == b.read_all(SYMBOLS)
        assert a.exchange.total == len(SYMBOLS) and b.exchange.total == 0
    finally:
        a.close()
        b.close()
    assert warnings(caplog) == []


@pytest.mark.parametrize(
    "exc",
    [
        redis.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth'"),
        redis.ResponseError("NOAUTH Authentication required."),
        redis.ResponseError("WRONGPASS invalid username-password pair or user is disabled."),
        redis.ConnectionError("HELLO must be called with the client already authenticated"),
    ],
)
def test_every_form_of_an_authentication_refusal_is_recognised(exc: Exception) -> None:
    assert redis_link.refusal("redis://h:1/0", exc) == (
        "refused the connection: it needs a password (put it in the url, redis://:PASSWORD@h:1/0)"
    )
    assert redis_link.refusal("redis://u:pw@h:1/0", exc) == (
        "refused the connection: the user or password in the url is wrong"
    )
    other = redis.ResponseError("OOM command not allowed")
    assert redis_link.refusal("redis://h:1/0", other) is None
