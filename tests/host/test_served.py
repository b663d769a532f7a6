"""The served exchange and its client, over real HTTP on localhost."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse

import attrs
import numpy as np
import pytest
import urllib3

from sltrader_plugins.host.exchange import (
    LATENCY_PROFILES,
    ExchangeError,
    LatencyProfile,
    RateLimitExceeded,
    ReplayExchange,
    SimClock,
    UnknownSymbolError,
)
from sltrader_plugins.host.loop import START, Host
from sltrader_plugins.host.workload import CLOCK_START, SIZES, workload_from
from sltrader_plugins.manager import PluginManager
from sltrader_plugins.served import (
    HttpExchange,
    RateLimit,
    RateLimitError,
    ServedMarket,
    end_time_ms,
    served_exchange,
    start_server,
)
from sltrader_plugins.timeframes import last_close_time


@pytest.fixture
def workload(tiny):
    return tiny


@pytest.fixture
def served(workload):
    """A served exchange of the tiny workload, no latency, no limit; yields (server, market)."""
    market = ServedMarket(workload.market(), workload.symbol_names(), LatencyProfile(), RateLimit())
    server, thread = start_server(market)
    yield server, market
    server.shutdown()
    server.server_close()
    thread.join(5)


@contextlib.contextmanager
def _serving(workload, limit=None, **options):
    """A served exchange of ``workload`` limited to ``limit`` (else not), with
    ``start_server``'s ``options``."""
    limit = limit or RateLimit()
    market = ServedMarket(workload.market(), workload.symbol_names(), LatencyProfile(), limit)
    server, thread = start_server(market, **options)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def _listener(serve):
    """A bare TCP listener that hands each connection to ``serve``; yields (url, accepted)."""
    accepted = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def accept():
            with contextlib.suppress(OSError):  # the listener closed
                while True:
                    conn = listener.accept()[0]
                    accepted.append(conn)
                    serve(conn)

        threading.Thread(target=accept, daemon=True).start()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    for conn in accepted:
        conn.close()


def _get(url: str, target: str, method: str = "GET") -> tuple[int, dict[str, str], object]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def test_the_host_and_the_server_build_the_same_market(workload):
    host = Host(workload, PluginManager())
    assert host.market == workload.market()
    assert list(host.exchange.symbols) == workload.symbol_names()
    assert CLOCK_START == START + 5.0


@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h"])
def test_klines_round_trip_exactly(served, workload, timeframe):
    server, _ = served
    clock = SimClock(CLOCK_START)
    replay = ReplayExchange(workload.market(), workload.symbol_names(), clock)
    client = HttpExchange(server.url, clock)
    for _ in range(3):
        clock.advance(97.5)
        for symbol in ("ETH/USDT", "1000PEPE-USD", "BTC_USDT"):
            ours, theirs = (
                client.fetch_klines(symbol, timeframe, 60),
                replay.fetch_klines(symbol, timeframe, 60),
            )
            assert (ours.symbol, ours.timeframe, ours.n) == (symbol, timeframe, 60)
            for a, b in zip(attrs.astuple(ours)[2:8], attrs.astuple(theirs)[2:8], strict=True):
                assert a.dtype == np.float64 and not a.flags.writeable
                assert a.tobytes() == b.tobytes()  # bit-identical
            # no look-ahead: the newest candle closed by the client's clock, no later
            assert ours.last_close_time == last_close_time(timeframe, clock.now())
        assert client.top_symbols(10) == replay.top_symbols(10)
    assert client.requests == 3 * 3 + 3


def test_rows_have_binance_shape(served):
    server, _ = served
    end = end_time_ms(CLOCK_START + 600)
    symbol = urllib.parse.quote("ETH/USDT", safe="")
    status, _, rows = _get(
        server.url, f"/api/v3/klines?symbol={symbol}&interval=5m&limit=2&endTime={end}"
    )
    assert status == 200 and len(rows) == 2
    open_ms, *prices, close_ms = rows[0][:7]
    assert all(isinstance(p, str) for p in prices) and close_ms == open_ms + 300_000 - 1
    assert rows[1][6] + 1 <= end  # closed by endTime
    assert len(rows[0]) == 12


def test_a_candle_closing_exactly_at_end_time_is_served(served):
    server, _ = served
    boundary = last_close_time("5m", CLOCK_START) + 600
    client = HttpExchange(server.url, SimClock(boundary))
    assert client.fetch_klines("BTC_USDT", "5m", 3).last_close_time == boundary
    assert end_time_ms(boundary - 1e-9) == end_time_ms(boundary)  # float error absorbed


def test_bad_symbol_and_bad_parameters_are_400_with_one_line(served):
    server, _ = served
    end = end_time_ms(CLOCK_START)
    status, _, body = _get(server.url, f"/api/v3/klines?symbol=NOPE&interval=1m&endTime={end}")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    for query, code in [
        (f"symbol=BTC_USDT&interval=7x&endTime={end}", -1120),
        (f"symbol=BTC_USDT&interval=1m&limit=-3&endTime={end}", -1100),
        (f"symbol=BTC_USDT&interval=1m&limit=0&endTime={end}", -1130),
        ("symbol=BTC_USDT&interval=1m", -1100),  # endTime is required: no clock here
        (f"interval=1m&endTime={end}", -1102),
        (f"symbol=BTC_USDT&interval=1m&endTime={end}&startTime=1", -1104),
        (f"symbol=BTC_USDT&interval=1m&endTime={end + 10**10}", -1130),  # after the replay
    ]:
        status, _, body = _get(server.url, f"/api/v3/klines?{query}")
        assert status == 400 and body["code"] == code, query
        assert "\n" not in body["msg"]
    assert _get(server.url, "/nowhere")[0] == 404
    client = HttpExchange(server.url, SimClock(CLOCK_START))
    with pytest.raises(UnknownSymbolError, match="Invalid symbol"):
        client.fetch_klines("NOPE", "1m", 5)
    with pytest.raises(ExchangeError, match="Invalid interval"):
        client.fetch_klines("BTC_USDT", "7x", 5)


def test_rate_limit_answers_429_with_retry_after_and_counts(workload):
    market = ServedMarket(
        workload.market(), workload.symbol_names(), LatencyProfile(), RateLimit(3, 600.0)
    )
    server, thread = start_server(market)
    try:
        client = HttpExchange(server.url, SimClock(CLOCK_START + 60), universe_attempts=1)
        for _ in range(3):
            client.fetch_klines("BTC_USDT", "1m", 5)
        with pytest.raises(RateLimitExceeded, match="Too many requests") as caught:
            client.fetch_klines("BTC_USDT", "1m", 5)
        assert caught.value.retry_after_s is not None and 1 <= caught.value.retry_after_s <= 600
        with pytest.raises(RateLimitExceeded):
            client.top_symbols(5)  # one attempt: refused as well
        end = end_time_ms(CLOCK_START)
        status, headers, body = _get(server.url, f"/api/v3/ticker/24hr?endTime={end}")
        assert status == 429 and int(headers["Retry-After"]) >= 1 and body["code"] == -1003
        stats = client.stats()
        assert stats["requests"] == 6 and stats["rate_limited"] == 3
        assert stats["peak_window_requests"] == 3 and client.rate_limited == 2
        status, _, after = _get(server.url, "/sltrader/v1/window/restart", "POST")
        assert status == 200 and after["peak_window_requests"] == 0
        client.fetch_klines("BTC_USDT", "1m", 5)  # the window starts over
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_top_symbols_waits_as_retry_after_says_at_most_max_and_counts_every_429(workload):
    with _serving(workload, RateLimit(1, 600.0)) as server:
        client = HttpExchange(server.url, SimClock(CLOCK_START + 60), max_retry_after_s=0.2)
        client.fetch_klines("BTC_USDT", "1m", 5)  # the window's one request
        start = time.monotonic()
        with pytest.raises(RateLimitExceeded) as caught:
            client.top_symbols(5)
        waited = time.monotonic() - start
        assert caught.value.retry_after_s >= 500  # asked to wait minutes: waited 2 x 0.2 s
        assert 0.4 <= waited < 2.0
        assert (client.requests, client.rate_limited) == (1 + 3, 3)  # 3 attempts, all 429
        assert client.stats()["rate_limited"] == 3
    with _serving(workload, RateLimit(1, 1.0)) as server:
        clock = SimClock(CLOCK_START + 60)
        client = HttpExchange(server.url, clock)
        client.fetch_klines("BTC_USDT", "1m", 5)
        start = time.monotonic()
        replay = ReplayExchange(workload.market(), workload.symbol_names(), clock)
        assert client.top_symbols(5) == replay.top_symbols(5)  # after Retry-After: 1
        assert time.monotonic() - start >= 1.0
        assert (client.requests, client.rate_limited) == (1 + 2, 1)


def test_a_keep_alive_connection_the_server_closed_is_sent_again_at_once(workload, monkeypatch):
    with _serving(workload, idle_timeout_s=0.1) as server:
        client = HttpExchange(server.url, SimClock(CLOCK_START + 60))
        first = client.fetch_klines("BTC_USDT", "1m", 5)
        for _ in range(250):  # the server closes the idle connection
            if server.connections == 0:
                break
            time.sleep(0.02)
        assert server.connections == 0
        # The race urllib3's check before reuse misses: the close comes just after it.
        monkeypatch.setattr(urllib3.connectionpool, "is_connection_dropped", lambda conn: False)
        again = client.fetch_klines("BTC_USDT", "1m", 5)
        assert again.close.tobytes() == first.close.tobytes()
        assert client.requests == 2 and client.stats()["requests"] == 2


def test_a_closed_connection_is_tried_once_more_and_a_timeout_not():
    def hang_up(conn):
        conn.recv(65536)
        conn.close()

    with _listener(hang_up) as (url, accepted):
        client = HttpExchange(url, SimClock(CLOCK_START), timeout_s=2)
        with pytest.raises(ExchangeError, match="connection failed: Remote end closed"):
            client.fetch_klines("BTC_USDT", "1m", 5)
        assert len(accepted) == 2 and client.requests == 1
    with _listener(lambda conn: None) as (url, accepted):
        client = HttpExchange(url, SimClock(CLOCK_START), timeout_s=0.2)
        start = time.monotonic()
        with pytest.raises(ExchangeError, match=r"/api/v3/klines: no answer within 0.2 s$"):
            client.fetch_klines("BTC_USDT", "1m", 5)
        assert time.monotonic() - start < 1.0 and len(accepted) == 1


def test_client_errors_are_one_exchange_error(served):
    server, _ = served
    with pytest.raises(ExchangeError, match="http://HOST:PORT"):
        HttpExchange("ftp://x", SimClock(0))
    with pytest.raises(ExchangeError, match="bad port"):
        HttpExchange("http://127.0.0.1:notaport", SimClock(0))
    host, port = server.server_address[:2]
    server.shutdown()
    server.server_close()
    client = HttpExchange(f"http://{host}:{port}", SimClock(CLOCK_START), timeout_s=2)
    with pytest.raises(ExchangeError) as caught:
        client.fetch_klines("BTC_USDT", "1m", 5)
    assert "\n" not in str(caught.value) and str(port) in str(caught.value)


def test_a_trader_refuses_a_server_of_another_market(served, workload):
    server, _ = served
    other = attrs.evolve(workload, cycles=workload.cycles + 1)
    with pytest.raises(ExchangeError, match=r"another market: horizon_s"):
        Host(other, PluginManager(), wrap_exchange=served_exchange(server.url))


def test_served_decisions_equal_the_embedded_ones(served, workload):
    embedded = Host(workload, PluginManager()).run()
    host = Host(workload, PluginManager(), wrap_exchange=served_exchange(served[0].url))
    report = host.run()
    assert report.decisions_digest == embedded.decisions_digest
    assert report.exchange_requests == embedded.exchange_requests > 0
    assert served[1].limiter.stats()["requests"] == report.exchange_requests


def test_rate_limit_text():
    assert RateLimit.parse("1200/1m") == RateLimit(1200, 60.0)
    assert RateLimit.parse("600/10s") == RateLimit(600, 10.0)
    assert RateLimit.parse("5/") == RateLimit(5, 1.0)
    assert RateLimit.parse("off") == RateLimit()
    assert str(RateLimit(5, 10)) == "5/10s" and "off" in str(RateLimit())
    for bad in ("fast", "10/0s", "10/2h", "-1/1m"):
        with pytest.raises(RateLimitError):
            RateLimit.parse(bad)


def test_latency_profiles_and_which_figure_wins():
    assert workload_from("full").latency_profile() == LATENCY_PROFILES["lan"]
    assert workload_from("small").latency_ms == 0.0  # the preset's, without a profile named
    wan = workload_from("small", latency="wan")
    assert wan.latency_profile() == LATENCY_PROFILES["wan"]
    mine = workload_from("small", {"latency": "wan", "latency_ms": 80.0})
    assert (mine.latency_ms, mine.jitter, mine.latency_profile().tail_p) == (80.0, 0.3, 0.02)
    import random

    rng = random.Random(1)
    draws = [LATENCY_PROFILES["wan"].sample_s(rng) for _ in range(2000)]
    assert min(draws) >= 0.105 and max(draws) <= 3 * 0.195
    assert 0 < sum(d > 0.195 for d in draws) < 100  # a tail of about 2 %
    assert LatencyProfile().sample_s(rng) == 0.0


def test_the_embedded_exchange_takes_the_whole_profile(workload):
    wan = attrs.evolve(workload, latency="wan", latency_ms=0.5)
    host = Host(wan, PluginManager())
    expected = attrs.evolve(LATENCY_PROFILES["wan"], mean_ms=0.5, jitter=wan.jitter)
    assert host.exchange.latency == expected
    lan = Host(workload, PluginManager())
    assert isinstance(lan.exchange, ReplayExchange)


def test_trader_variants_decide_differently():
    small = SIZES["small"]
    assert small.trader(0) is small
    assert small.trader(2).buy_threshold == pytest.approx(0.67)
    assert small.trader(2).sell_threshold == pytest.approx(0.33)
    from sltrader_plugins.config import ConfigError

    with pytest.raises(ConfigError, match="trader 20"):
        small.trader(20)
