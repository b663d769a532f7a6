"""The served exchange against clients that misbehave: idle and slow connections, more
connections than it holds, malformed requests, methods it does not serve, bodies.

Traffic goes to 127.0.0.1 only; every loop is bounded, every socket closed.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sltrader_plugins import served
from sltrader_plugins.host.exchange import LatencyProfile
from sltrader_plugins.host.workload import CLOCK_START
from sltrader_plugins.served import (
    ExchangeServer,
    RateLimit,
    ServedMarket,
    end_time_ms,
    start_server,
)

#: Connections that connect and send nothing (or a request that never ends): more than
#: the server holds, and more than it has workers.
CROWD = 300
#: Generous for a request that takes a few ms on an idle server: machines are shared.
PROMPT_S = 1.0
#: Long enough for a silent connection to make room for a newcomer.
EVICTABLE_S = served.EVICT_AFTER_S + 0.1


@pytest.fixture
def serve(tiny):
    """``serve(latency=..., **server_options)``: a served tiny workload, stopped after."""
    started: list[tuple[ExchangeServer, threading.Thread]] = []

    def start(latency: LatencyProfile | None = None, **options: Any) -> ExchangeServer:
        market = ServedMarket(
            tiny.market(), tiny.symbol_names(), latency or LatencyProfile(), RateLimit()
        )
        server, thread = start_server(market, **options)
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


def _klines_target(limit: int = 5) -> str:
    symbol = urllib.parse.quote("ETH/USDT", safe="")
    end = end_time_ms(CLOCK_START + 60)
    return f"/api/v3/klines?symbol={symbol}&interval=1m&limit={limit}&endTime={end}"


def _request(
    server: ExchangeServer, method: str = "GET", target: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: status, headers (lower-case names), body."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, target or _klines_target())
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def _connect(server: ExchangeServer) -> socket.socket:
    return socket.create_connection(server.server_address[:2], timeout=5)


@contextlib.contextmanager
def _crowd(server: ExchangeServer, n: int, first: bytes = b"") -> Iterator[list[socket.socket]]:
    """``n`` connections, each having sent ``first`` (maybe nothing); closed on exit."""
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            opened.append(_connect(server))
            if first:
                opened[-1].sendall(first)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """What the server sends until it closes ``sock``; ``None`` if it is still open after
    ``timeout`` seconds."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        return None
    return b"".join(chunks)


def _is_open(sock: socket.socket) -> bool:
    """The server has not closed ``sock`` (nor written to it)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be a surprise: it fails the caller's test
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(5)


def _raw(server: ExchangeServer, data: bytes) -> bytes:
    """``data`` sent on a new connection; all the server answers until it closes it."""
    with _connect(server) as sock:
        sock.sendall(data)
        reply = _until_closed(sock)
    assert reply is not None, f"the server kept the connection open after {data[:40]!r}"
    return reply


def _parse(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    """A whole HTTP/1.x answer: status line, headers (lower-case names), body."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), reply[:300]
    return status_line, headers, body


def _binance_error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert set(answer) == {"code", "msg"} and isinstance(answer["code"], int)
    assert answer["code"] < 0 and isinstance(answer["msg"], str) and answer["msg"]
    assert "\n" not in answer["msg"] and "<" not in answer["msg"]
    return answer


class _Stream:
    """``http.client.HTTPResponse`` over one buffered reader, for answers in a row."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def makefile(self, *args: Any, **kwargs: Any) -> Any:
        return _Unclosed(self.file)  # a response closes its file: the next one reads on

    def response(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        response = http.client.HTTPResponse(self, method=method)  # type: ignore[arg-type]
        response.begin()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()

    def close(self) -> None:
        self.file.close()


class _Unclosed:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:
        pass


# -- idle and slow connections ----------------------------------------------------------


def test_idle_connections_do_not_delay_a_client(serve):
    server = serve()
    assert _request(server)[0] == 200  # the rows are encoded once: time the serving only
    with _crowd(server, CROWD) as idle:
        time.sleep(EVICTABLE_S)  # full: the newcomer takes the place of the oldest
        started = time.monotonic()
        status, _, body = _request(server)
        elapsed = time.monotonic() - started
        assert status == 200 and len(json.loads(body)) == 5
        assert elapsed < PROMPT_S, f"answered after {elapsed:.2f} s behind {CROWD} idle"
        assert _is_open(idle[-1])  # answered while the idle connections are still there


def test_requests_that_never_end_do_not_occupy_the_workers(serve):
    server = serve()
    assert CROWD > served.MAX_WORKERS
    with _crowd(server, CROWD, b"GET /api/v3/klines?symbol=BTC") as slow:
        time.sleep(EVICTABLE_S)
        started = time.monotonic()
        status, _, _ = _request(server)
        elapsed = time.monotonic() - started
        assert status == 200 and elapsed < PROMPT_S, f"answered after {elapsed:.2f} s"
        assert _is_open(slow[-1])


def test_beyond_the_bound_the_longest_idle_connection_makes_room(serve):
    server = serve(max_connections=4)
    with _crowd(server, 4) as idle:
        time.sleep(EVICTABLE_S)  # all accepted, in order, and silent long enough
        status, _, _ = _request(server)
        assert status == 200
        assert _until_closed(idle[0]) == b""  # closed without a word: it asked nothing
        assert all(_is_open(sock) for sock in idle[2:])


def test_an_idle_keep_alive_connection_goes_before_a_new_one(serve):
    server = serve(max_connections=2)
    with _connect(server) as kept, _connect(server) as new:
        kept.sendall(f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stream = _Stream(kept)
        assert stream.response()[0] == 200
        stream.close()
        time.sleep(EVICTABLE_S)
        # full (kept, parked between requests, and new): the newcomer evicts `new`, the
        # connection that has never asked anything, and not the client between requests
        assert _request(server)[0] == 200
        assert _until_closed(new) == b""
        assert _is_open(kept)


def test_when_every_connection_is_being_served_a_new_one_is_503(serve):
    # one worker, two connections: one request sleeps in the worker, one waits for it
    server = serve(LatencyProfile(mean_ms=800.0, jitter=0.0), max_connections=2, max_workers=1)
    request = f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with _connect(server) as first, _connect(server) as second:
        first.sendall(request)
        second.sendall(request)
        for _ in range(300):  # both dispatched (one served, one waiting): none is idle
            if server.busy == 2:
                break
            time.sleep(0.01)
        status_line, headers, body = _parse(_raw(server, request))
        assert status_line.startswith("HTTP/1.1 503 ")
        assert _binance_error(headers, body)["code"] == -1008
        assert headers["connection"] == "close"
        for sock in (first, second):
            stream = _Stream(sock)
            assert stream.response()[0] == 200  # the two in service are served
            stream.close()


def test_a_request_that_does_not_arrive_in_time_is_408_and_closed(serve):
    server = serve(header_timeout_s=0.3, idle_timeout_s=0.6)
    status_line, headers, body = _parse(_raw(server, b"GET /api/v3/klines HTTP/1.1\r\n"))
    assert status_line.startswith("HTTP/1.1 408 ")
    assert _binance_error(headers, body)["code"] == -1007 and headers["connection"] == "close"
    with _connect(server) as silent:
        started = time.monotonic()
        assert _until_closed(silent) == b""  # asked nothing: closed without a word
        assert 0.2 < time.monotonic() - started < 3.0
    with _connect(server) as kept:  # between requests, the longer idle timeout
        kept.sendall(f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stream = _Stream(kept)
        assert stream.response()[0] == 200
        started = time.monotonic()
        assert stream.file.read() == b""  # closed, without a word
        assert 0.4 < time.monotonic() - started < 3.0
        stream.close()


def test_the_documented_bounds_are_the_code_s():
    """docs/workload.md names each bound as ``NAME = value``: the values of the code."""
    docs = (Path(__file__).parents[2] / "docs" / "workload.md").read_text()
    named = dict(re.findall(r"`([A-Z_]+) =\s+([0-9.]+)`", docs))
    for name in ("MAX_CONNECTIONS", "MAX_WORKERS", "HEADER_TIMEOUT_S", "IDLE_TIMEOUT_S"):
        assert name in named, f"docs/workload.md does not name {name}"
    for name, value in named.items():
        assert float(value) == getattr(served, name), name
    assert served.HEADER_TIMEOUT_S < served.IDLE_TIMEOUT_S
    assert served.MAX_WORKERS < served.MAX_CONNECTIONS < CROWD  # the crowds are over both


# -- every error in Binance's shape ------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_methods_a_route_does_not_serve_are_405_json(serve, method):
    server = serve()
    status, headers, body = _request(server, method)
    assert status == 405
    assert _binance_error(headers, body)["code"] == -1020
    assert headers["allow"] == "GET, HEAD"


def test_the_restart_route_is_post_only_and_unknown_paths_are_404_for_any_method(serve):
    server = serve()
    status, headers, body = _request(server, "GET", "/sltrader/v1/window/restart")
    assert status == 405 and headers["allow"] == "POST"
    assert _binance_error(headers, body)["code"] == -1020
    assert _request(server, "POST", "/sltrader/v1/window/restart")[0] == 200
    for method in ("GET", "POST", "DELETE"):
        status, headers, body = _request(server, method, "/nowhere")
        assert status == 404 and _binance_error(headers, body)["code"] == -1000


def test_head_answers_the_headers_of_get(serve):
    server = serve()
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for target, status in [(_klines_target(), 200), ("/nowhere", 404)]:
            connection.request("GET", target)
            response = connection.getresponse()
            length = len(response.read())
            connection.request("HEAD", target)  # the same keep-alive connection
            head = connection.getresponse()
            assert head.status == status and head.read() == b""
            assert head.getheader("Content-Type") == "application/json"
            assert int(head.getheader("Content-Length")) == length > 0
        connection.request("GET", _klines_target())  # the connection is still in step
        assert connection.getresponse().status == 200
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GARBAGE", 400),
        (b"\x00\xff\xfe\x01", 400),
        (b"GET /", 400),  # HTTP/0.9 is not served
        (b"POST /sltrader/v1/window/restart", 400),
        (b"GET / HTTP/1.1 more", 400),
        (b"GET / FTP/1.1", 400),
        (b"GET / HTTP/1.x", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1", 414),
    ],
)
def test_malformed_requests_are_answered_in_binance_shape(serve, request_line, status):
    server = serve()
    status_line, headers, body = _parse(_raw(server, request_line + b"\r\n\r\n"))
    assert status_line.startswith(f"HTTP/1.1 {status} ")
    assert headers["connection"] == "close"
    assert _binance_error(headers, body)["code"] == (-1100 if status < 500 else -1020)
    assert _request(server)[0] == 200  # and the server serves on


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("X-Long: " + "b" * 70_000 + "\r\n", 431),
        ("".join(f"X-{i}: y\r\n" for i in range(150)), 431),  # more than the stdlib reads
        ("Content-Length: 9999999999\r\n", 413),
        ("Content-Length: lots\r\n", 400),
        ("Content-Length: 1\r\nContent-Length: 2\r\n", 400),
        ("Transfer-Encoding: chunked\r\n", 501),
    ],
)
def test_bad_headers_are_answered_in_binance_shape(serve, headers, status):
    server = serve()
    request = f"POST /sltrader/v1/window/restart HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
    status_line, answer_headers, body = _parse(_raw(server, request.encode()))
    assert status_line.startswith(f"HTTP/1.1 {status} ")
    assert answer_headers["connection"] == "close"
    assert _binance_error(answer_headers, body)["code"] in (-1100, -1020)


def test_a_body_is_skipped_and_requests_in_a_row_are_all_answered(serve):
    server = serve()
    post = "POST /sltrader/v1/window/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    get = f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(server) as sock:
        stream = _Stream(sock)
        sock.sendall((post + get + "\r\n" + get).encode())  # pipelined, a stray CRLF between
        assert [stream.response("POST")[0], stream.response()[0], stream.response()[0]] == [
            200,
            200,
            200,
        ]
        sock.sendall(post[:30].encode())  # a request in two pieces
        time.sleep(0.05)
        sock.sendall(post[30:].encode())
        assert stream.response("POST")[0] == 200
        expecting = post.replace("Content-Length", "Expect: 100-continue\r\nContent-Length")
        sock.sendall(expecting[:-5].encode())  # the body once the server says continue
        assert stream.file.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.file.readline() == b"\r\n"
        assert stream.response("POST")[0] == 200
        sock.sendall(b"hello" + get.encode())
        assert stream.response()[0] == 200
        stream.close()


def test_a_client_that_does_not_read_its_answers_holds_no_worker(serve):
    server = serve(max_workers=1)
    target = _klines_target(limit=10_000)
    answers = 30  # far more than the socket buffers hold
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect(server.server_address[:2])
        slow.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * answers)
        time.sleep(0.3)  # the server writes until the client's buffers are full
        started = time.monotonic()
        assert _request(server)[0] == 200  # the only worker is free
        assert time.monotonic() - started < PROMPT_S
        stream = _Stream(slow)
        rows = [len(json.loads(stream.response()[2])) for _ in range(answers)]
        assert rows == [rows[0]] * answers and rows[0] > 1000  # all of every answer
        stream.close()


def test_a_client_that_stops_reading_is_dropped(serve):
    server = serve(write_timeout_s=0.3)
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect(server.server_address[:2])
        request = f"GET {_klines_target(limit=10_000)} HTTP/1.1\r\nHost: x\r\n\r\n"
        slow.sendall(request.encode() * 30)
        time.sleep(1.0)  # past the write timeout
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := slow.recv(1 << 20):
                received += len(chunk)
        assert 0 < received < 30 * 600_000  # some answers, then the connection closed


# -- full, out of descriptors, out of threads, heads over the bound -----------------------


def test_a_full_server_answers_each_complete_request_200_or_503_and_resets_none(serve):
    # Many clients at once, each with a whole request: whoever finds the server full is
    # told 503 (it can retry), none is closed on with its request unread (a reset).
    server = serve(max_connections=8)
    request = f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    clients = 40
    start = threading.Barrier(clients)
    outcomes: list[Any] = [None] * clients

    def client(i: int) -> None:
        try:
            start.wait(10)
            with _connect(server) as sock:
                sock.sendall(request.encode())
                stream = _Stream(sock)
                status, headers, body = stream.response()
                stream.close()
            if status == 503:
                assert _binance_error(headers, body)["code"] == -1008
            outcomes[i] = status
        except Exception as exc:  # reported below, with every outcome
            outcomes[i] = repr(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert all(outcome in (200, 503) for outcome in outcomes), outcomes
    assert 200 in outcomes


def test_a_connection_whose_request_is_unread_is_not_the_one_to_make_room(serve, monkeypatch):
    # The poller held between rounds while a newcomer connects and then an old silent
    # connection sends its request: the next round accepts first, with that request
    # unread. Closing it would reset its client; the newcomer is told 503 instead.
    server = serve(max_connections=1)
    hold, held, release = threading.Event(), threading.Event(), threading.Event()
    expire = server._expire

    def expire_or_hold(now: float) -> None:
        expire(now)
        if hold.is_set():
            hold.clear()
            held.set()
            release.wait(10)

    monkeypatch.setattr(server, "_expire", expire_or_hold)
    request = f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with _connect(server) as old:
        time.sleep(EVICTABLE_S)  # old enough to make room, were it silent
        hold.set()
        server._wake()
        assert held.wait(5)
        try:
            with _connect(server) as new:  # in the backlog: accepted when released
                new.sendall(request)
                old.sendall(request)
                time.sleep(0.1)  # both arrived
                release.set()
                status_line, headers, body = _parse(_until_closed(new) or b"")
                assert status_line.startswith("HTTP/1.1 503 ")
                assert _binance_error(headers, body)["code"] == -1008
        finally:
            release.set()
        stream = _Stream(old)
        assert stream.response()[0] == 200
        stream.close()


def test_out_of_descriptors_the_poller_rests_instead_of_spinning(serve, monkeypatch):
    server = serve()
    accept = socket.socket.accept
    calls = 0
    failing = threading.Event()
    failing.set()

    def accept_or_emfile(sock: socket.socket) -> Any:
        nonlocal calls
        if sock is server.socket:
            calls += 1
            if failing.is_set():
                raise OSError(errno.EMFILE, "Too many open files")
        return accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept_or_emfile)
    with _connect(server) as sock:  # waits in the backlog: the listener stays readable
        sock.sendall(f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
        tried = calls
        failing.clear()  # descriptors again: the waiting client is served
        stream = _Stream(sock)
        assert stream.response()[0] == 200
        stream.close()
    assert tried < 50, f"{tried} accepts in 0.5 s with nothing to free: a spin"


def test_a_request_no_worker_can_take_is_503_and_frees_its_connection(serve, monkeypatch):
    server = serve()
    start = threading.Thread.start

    def no_worker(thread: threading.Thread) -> None:
        if thread.name == "sltrader-exchange-worker":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(served.threading.Thread, "start", no_worker)
    request = f"GET {_klines_target()} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    status_line, headers, body = _parse(_raw(server, request))
    assert status_line.startswith("HTTP/1.1 503 ")
    assert _binance_error(headers, body)["code"] == -1008
    for _ in range(300):
        if server.connections == 0:
            break
        time.sleep(0.01)
    assert server.connections == 0 and server.busy == 0
    monkeypatch.undo()  # threads again: served
    assert _request(server)[0] == 200


@pytest.mark.parametrize(
    ("request_line", "headers", "status"),
    [
        (f"GET {_klines_target()} HTTP/1.1", "X-Long: " + "b" * 60_000 + "\r\n", 431),
        ("GET /" + "a" * 30_000 + " HTTP/1.1", "", 414),
    ],
)
def test_a_head_over_the_bound_in_one_piece_is_refused(serve, request_line, headers, status):
    # The whole head, its end included, in one send: the bound holds all the same.
    server = serve()
    request = f"{request_line}\r\nHost: x\r\n{headers}\r\n".encode()
    assert served.MAX_HEAD_BYTES < len(request) < 65536  # one read of the server's
    status_line, answer_headers, body = _parse(_raw(server, request))
    assert status_line.startswith(f"HTTP/1.1 {status} ")
    assert _binance_error(answer_headers, body)["code"] == -1100
    assert _request(server)[0] == 200
