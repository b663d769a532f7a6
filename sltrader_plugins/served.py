"""The replay exchange served over HTTP on localhost, and a client for it.

``sltrader exchange`` serves the market of a workload to several trader processes, as a
real exchange serves its clients: real (slept) latency per request, and one global rate
limit in real time that answers HTTP 429 with ``Retry-After``. The API has the shape of
Binance's public one, so the client would talk to a real exchange with little change:

- ``GET /api/v3/klines?symbol=&interval=&limit=&endTime=``: the newest ``limit`` candles
  closed by ``endTime`` (epoch ms; the client's clock), rows ``[openTime ms, "open",
  "high", "low", "close", "volume", closeTime ms, "quoteVolume", trades, "takerBase",
  "takerQuote", "0"]``. Prices are exact ``repr`` strings (a float round-trips
  bit-identically); the fields the market does not model are zero. Unlike Binance,
  ``endTime`` is required (the replay has no clock of its own) and the candle still open
  at ``endTime`` is never served.
- ``GET /api/v3/ticker/24hr?endTime=``: every symbol with its volume level at
  ``endTime`` as ``quoteVolume`` (what the universe ranks by); the client ranks.
- ``GET /sltrader/v1/market``: the market's seed, window and symbols (not rate limited),
  so a trader can check it trades the market it expects.
- ``GET /sltrader/v1/stats``: ``{"requests", "rate_limited", "peak_window_requests", ...}``
  (requests: every API request, refused ones too; the peak: the most requests let
  through in one window).
- ``POST /sltrader/v1/window/restart``: the window forgets its requests and its peak
  (the bench measures each trader's own peak).

Errors are Binance's: ``{"code": -1121, "msg": "Invalid symbol."}`` with 400, ``-1003``
with 429, and so on; the HTTP-level ones too (405 ``-1020`` with ``Allow`` for a method a
path does not serve, 400 ``-1100`` for a malformed request, 408, 413, 414, 431, 501, 503,
505), always with a status line, never an HTML page. HEAD is GET without the body.
Symbols contain ``/``: clients URL-encode them.

One poller thread owns the sockets and never blocks on one, so idle and slow clients cost
no thread; workers serve complete requests (:class:`ExchangeServer` has the bounds).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import json
import math
import random
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import attrs
import numpy as np
import urllib3

from sltrader_plugins.host.exchange import (
    ExchangeError,
    LatencyProfile,
    MarketConfig,
    RateLimitExceeded,
    ReplayExchange,
    SimClock,
    UnknownSymbolError,
    rank_symbols,
)
from sltrader_plugins.klines import Klines
from sltrader_plugins.protocols import Clock
from sltrader_plugins.timeframes import timeframe_seconds

#: Binance's most candles per klines request is 1000; the replay serves longer series.
MAX_LIMIT = 100_000
#: How many connections the server holds at once, idle ones included (they cost a socket,
#: no thread). When full, a newcomer takes the place of a parked one, or is answered 503.
MAX_CONNECTIONS = 256
#: When full, only a connection parked this long (seconds) with nothing waiting to be read
#: makes room: a younger one may have its request on the way, and closing a socket that
#: has unread data resets the client (503 tells a newcomer to retry, cleanly).
EVICT_AFTER_S = 0.5
#: Out of descriptors with none to free, the listening socket is not watched for this
#: long (seconds), or until a connection closes: it stays readable, and would be spun on.
ACCEPT_BACKOFF_S = 0.05
#: How many requests are served at once: worker threads, started as needed. A worker
#: serves a complete request (and sleeps its latency); it never waits on a client.
MAX_WORKERS = 64
#: The kline intervals served: Binance's, but for those shorter than the replay's minute.
INTERVALS = frozenset(
    ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
)
#: A new connection must have sent its whole request head (line and headers) this long
#: after it was accepted, a kept-alive one this long after it began its next request
#: (seconds); else it is answered 408 and closed (closed without a word if it sent nothing).
HEADER_TIMEOUT_S = 2.0
#: An idle keep-alive connection is closed after this long (seconds).
IDLE_TIMEOUT_S = 5.0
#: A client has this long to read an answer (seconds); then its connection is dropped.
WRITE_TIMEOUT_S = 30.0
#: After its last answer, a connection is read (and what comes dropped) for at most this
#: long (seconds) before it is closed, so that closing does not reset the answer away.
LINGER_S = 1.0
#: The longest request head (bytes): a longer one is answered 414 or 431.
MAX_HEAD_BYTES = 16 * 1024
#: The API reads no request body; one of at most this many bytes is skipped, longer is 413.
MAX_BODY_BYTES = 64 * 1024
#: How many accepted requests the rolling window remembers when no limit is set
#: (for ``peak_window_requests``); the count saturates there.
MAX_WINDOW_LOG = 1_000_000


class RateLimitError(ValueError):
    """A rate-limit text that does not parse (one line for the command line)."""


@attrs.frozen
class RateLimit:
    """At most ``requests`` requests in any ``window_s`` seconds of real time (a rolling
    window); ``requests == 0`` is no limit (the window still measures the peak).

    Requests refused with 429 do not use the budget.
    """

    requests: int = 0
    window_s: float = 60.0

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"1200/1m"``, ``"600/10s"``, ``"50/1.5s"``, ``"0/1m"`` or ``"off"`` (no limit).

        :raises RateLimitError: anything else, in one line.
        """
        if text.strip().lower() in ("off", "0", "none"):
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|m|min)?\s*", text)
        if match is None:
            raise RateLimitError(
                f"expected REQUESTS/WINDOW such as 1200/1m or 600/10s, or 'off'; got {text!r}"
            )
        amount = float(match.group(2) or 1)
        window = amount * (60.0 if match.group(3) in ("m", "min") else 1.0)
        if not 0.0 < window <= 3600.0:
            raise RateLimitError(f"the window must be above 0 s and at most 1 h, got {text!r}")
        return cls(int(match.group(1)), window)

    def __str__(self) -> str:
        window = f"{self.window_s:g}s"
        return f"{self.requests}/{window}" if self.requests else f"off (measured per {window})"


class _Limiter:
    """A rolling-window counter: the times of the requests it let through."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._times: collections.deque[float] = collections.deque(
            maxlen=limit.requests or MAX_WINDOW_LOG
        )
        self._lock = threading.Lock()
        self.requests = 0
        self.rate_limited = 0
        self.peak = 0

    def admit(self) -> float | None:
        """``None`` when the request may go, else the seconds until one may."""
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            times = self._times
            while times and times[0] <= now - self.limit.window_s:
                times.popleft()
            if self.limit.requests and len(times) >= self.limit.requests:
                self.rate_limited += 1
                return times[0] + self.limit.window_s - now
            times.append(now)
            self.peak = max(self.peak, len(times))
            return None

    def restart_window(self) -> None:
        """Forget the window's requests and its peak (the counters stay)."""
        with self._lock:
            self._times.clear()
            self.peak = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "rate_limited": self.rate_limited,
                "peak_window_requests": self.peak,
                "rate_limit": self.limit.requests,
                "window_s": self.limit.window_s,
            }


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class ServedMarket:
    """What the server serves: the replay exchange of one market, its latency and limit.

    :param market: the market (``Workload.market()``, as a host would build it).
    :param symbols: the listed symbols.
    :param latency: slept per API request, in the request's own thread.
    :param rate_limit: the global limit over every API request, all clients together.
    """

    def __init__(
        self,
        market: MarketConfig,
        symbols: Sequence[str],
        latency: LatencyProfile,
        rate_limit: RateLimit,
    ) -> None:
        # The clock is unused: every request brings its own time.
        self.replay = ReplayExchange(market, symbols, SimClock(market.start))
        self.market = market
        self.latency = latency
        self.limiter = _Limiter(rate_limit)
        # Each served row's JSON, by (symbol, interval): a series never changes, and
        # encoding its floats is most of a request's cost. Only rows served are held.
        self._rows: dict[tuple[str, str], list[str | None]] = {}
        self._rng = random.Random(market.seed)
        self._rng_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {**attrs.asdict(self.market), "symbols": list(self.replay.symbols)}

    def sleep(self) -> None:
        with self._rng_lock:
            seconds = self.latency.sample_s(self._rng)
        if seconds > 0:
            time.sleep(seconds)

    def klines(self, query: Mapping[str, str]) -> bytes:
        _only(query, ("symbol", "interval", "limit", "endTime"))
        symbol = _required(query, "symbol")
        interval = _required(query, "interval")
        limit = _integer(query, "limit", 500, 1, MAX_LIMIT)
        now = _integer(query, "endTime", None, 0, 2**53) / 1000.0
        if interval not in INTERVALS:
            # Binance's set: each interval served keeps its aggregate, so the set is bounded.
            raise _ApiError(400, -1120, "Invalid interval.")
        step = timeframe_seconds(interval)
        try:
            series, begin, end = self.replay.window(symbol, interval, limit, now)
        except UnknownSymbolError:
            raise _ApiError(400, -1121, "Invalid symbol.") from None
        except ExchangeError as exc:
            raise _ApiError(400, -1130, f"Data sent for a parameter is not valid: {exc}.") from None
        rows = self._rows.get((symbol, interval))
        if rows is None:
            rows = self._rows.setdefault((symbol, interval), [None] * len(series.close))
        for i in range(begin, end):  # each row encoded once, when first served
            if rows[i] is None:
                rows[i] = encode_row(series, i, step)
        return ("[" + ",".join(rows[begin:end]) + "]").encode()  # type: ignore[arg-type]

    def ticker(self, query: Mapping[str, str]) -> bytes:
        _only(query, ("endTime",))
        now = _integer(query, "endTime", None, 0, 2**53) / 1000.0
        rows = [
            {"symbol": symbol, "quoteVolume": repr(level)}
            for symbol, level in self.replay.volume_levels(now)
        ]
        return json.dumps(rows).encode()


def encode_row(series: Any, i: int, step: int) -> str:
    """Candle ``i`` of ``series`` as Binance's row, prices as exact ``repr`` strings."""
    ms = int(series.open_time[i]) * 1000
    o, h, lo, c, v = (
        float(series.open[i]),
        float(series.high[i]),
        float(series.low[i]),
        float(series.close[i]),
        float(series.volume[i]),
    )
    return (
        f'[{ms},"{o!r}","{h!r}","{lo!r}","{c!r}","{v!r}",{ms + step * 1000 - 1},"0",0,"0","0","0"]'
    )


def _only(query: Mapping[str, str], known: Sequence[str]) -> None:
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise _ApiError(
            400, -1104, f"Not all sent parameters were read: unknown parameter '{unknown[0]}'."
        )


def _required(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value:
        raise _ApiError(
            400,
            -1102,
            f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
        )
    return value


def _integer(query: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int:
    text = query.get(name)
    if text is None and default is not None:
        return default
    if text is None or not re.fullmatch(r"[0-9]{1,20}", text):
        raise _ApiError(
            400,
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    value = int(text)
    if not low <= value <= high:
        raise _ApiError(
            400, -1130, f"Data sent for parameter '{name}' is not valid: {low} to {high}."
        )
    return value


#: The routes and the methods each serves (HEAD: GET's answer without its body).
ROUTES: dict[str, tuple[str, ...]] = {
    "/api/v3/klines": ("GET", "HEAD"),
    "/api/v3/ticker/24hr": ("GET", "HEAD"),
    "/sltrader/v1/market": ("GET", "HEAD"),
    "/sltrader/v1/stats": ("GET", "HEAD"),
    "/sltrader/v1/window/restart": ("POST",),
}
#: A request head ends at its first empty line (CRLF, or a bare LF as the stdlib reads).
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _protocol_code(status: int) -> int:
    """Binance's code for an HTTP-level error (the request, not its parameters)."""
    special = {408: -1007, 503: -1008, 405: -1020, 501: -1020, 505: -1020}
    return special.get(status, -1100 if status < 500 else -1000)


def _error_answer(status: int, msg: str) -> bytes:
    """A whole answer, sent by the poller itself: Binance's body, then the connection
    closes."""
    body = json.dumps({"code": _protocol_code(status), "msg": msg}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_Chunks = Sequence[bytes | memoryview]


class _Collector:
    """A handler's ``wfile``: the answer is kept, to be sent without waiting (what the
    socket does not take at once, the poller writes)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(data if isinstance(data, bytes) else bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    """One complete request, in a worker: its head is read already (by the poller), its
    answer is collected (:class:`_Collector`). Nothing here waits on the network."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients of a real API use it
    # A request line without a version ("GARBAGE", or HTTP/0.9's "GET /") is answered
    # in HTTP/1.1, with a status line: the stdlib answers HTTP/0.9 with a bare body.
    default_request_version = "HTTP/1.1"
    server: ExchangeServer

    def __init__(self, request: Any, client_address: Any, server: Any, head: bytes) -> None:
        self.head = head
        self.body_length = 0
        self._expects_100 = False
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self.head)
        self.answer = _Collector()
        self.wfile = self.answer  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        self.command = None  # type: ignore[assignment]
        self.requestline, self.request_version = "", self.default_request_version
        self.raw_requestline = self.rfile.readline()
        if not self.raw_requestline.strip():
            self.send_error(HTTPStatus.BAD_REQUEST, "Empty request line.")
        elif self.parse_request():
            self._dispatch()

    def finish(self) -> None:
        pass

    def parse_request(self) -> bool:
        """The stdlib's parsing (its errors answered by :meth:`send_error`), then what it
        lets through that this server does not: HTTP/0.9 and request bodies."""
        if not super().parse_request():
            return False
        if len(self.requestline.split()) != 3:  # "GET /": HTTP/0.9
            self.send_error(
                HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served: send 'METHOD /path HTTP/1.1'."
            )
            return False
        if "Transfer-Encoding" in self.headers:
            self.send_error(
                HTTPStatus.NOT_IMPLEMENTED, "Transfer-Encoding is not supported: no body is read."
            )
            return False
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1 or (lengths and not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip())):
            self.send_error(HTTPStatus.BAD_REQUEST, "Malformed Content-Length.")
            return False
        self.body_length = int(lengths[0]) if lengths else 0
        if self.body_length > MAX_BODY_BYTES:
            self.send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"No body is read; one of at most {MAX_BODY_BYTES} bytes is skipped.",
            )
            return False
        if self._expects_100 and self.body_length:  # the body comes (and is skipped)
            return super().handle_expect_100()
        return True

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: answered once the body's length is checked (a body
        refused gets no 100 first)."""
        self._expects_100 = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every HTTP-level error in Binance's shape (never the stdlib's HTML page); the
        connection closes after it (where the next request starts is unknown)."""
        status = HTTPStatus(code)
        msg = (message or status.phrase).replace("\r", " ").replace("\n", " ")[:200]
        self.close_connection = True
        self._error(_ApiError(status, _protocol_code(status), msg))

    def _dispatch(self) -> None:
        try:
            url = urllib.parse.urlsplit(self.path)
        except ValueError:  # such as an absolute URL with a broken host
            self._error(_ApiError(400, -1100, "Malformed request target."))
            return
        methods = ROUTES.get(url.path)
        if methods is None:
            self._error(_ApiError(404, -1000, f"Unknown path {url.path}."))
        elif self.command not in methods:
            allowed = ", ".join(methods)
            self._error(
                _ApiError(
                    405,
                    -1020,
                    f"This operation is not supported: {self.command} {url.path} "
                    f"(allowed: {allowed}).",
                ),
                {"Allow": allowed},
            )
        elif url.path == "/sltrader/v1/window/restart":
            self.server.market.limiter.restart_window()
            self._send(200, json.dumps(self.server.market.limiter.stats()).encode())
        else:
            self._get(url)

    def _get(self, url: urllib.parse.SplitResult) -> None:
        try:
            pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            pairs = []
        query = dict(pairs)
        market = self.server.market
        if url.path == "/sltrader/v1/stats":
            self._send(200, json.dumps(market.limiter.stats()).encode())
            return
        if url.path == "/sltrader/v1/market":
            self._send(200, json.dumps(market.info()).encode())
            return
        route = market.klines if url.path == "/api/v3/klines" else market.ticker
        wait = market.limiter.admit()
        market.sleep()  # a refusal takes its round trip too
        if wait is not None:
            retry = max(1, math.ceil(wait))
            self._error(
                _ApiError(
                    429,
                    -1003,
                    f"Too many requests; the limit is {market.limiter.limit}. "
                    f"Retry after {retry} s.",
                ),
                {"Retry-After": str(retry)},
            )
            return
        try:
            body = route(query)
        except _ApiError as exc:
            self._error(exc)
            return
        self._send(200, body)

    def _error(self, exc: _ApiError, headers: Mapping[str, str] | None = None) -> None:
        self._send(exc.status, json.dumps({"code": exc.code, "msg": exc.msg}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request
        pass


class _Connection:
    """A client connection. The poller owns it while it is parked (waiting for a request
    head, idle between requests, being written to, or closing); a worker, while its
    request is served."""

    __slots__ = ("address", "buffer", "deadline", "events", "keep", "out", "scanned", "skip")
    __slots__ += ("sock", "where")

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()  # received, not yet served
        self.scanned = 0  # how much of the buffer holds no head end
        self.skip = 0  # body bytes still to drop (the API reads no body)
        self.out: collections.deque[memoryview] = collections.deque()  # the answer's rest
        self.keep = False  # after the answer: the next request (else close)
        self.deadline = 0.0
        self.events = 0  # what the poller's selector watches
        self.where: collections.OrderedDict[_Connection, None] | None = None


class ExchangeServer(socketserver.TCPServer):
    """The HTTP server of a :class:`ServedMarket`.

    One poller thread (``serve_forever``) owns the sockets: it accepts, reads request
    heads, writes answers and closes, all without blocking, so an idle or slow connection
    costs a socket and no thread. A complete request goes to a worker (at most
    ``max_workers`` threads, started as needed), which computes the answer and sleeps the
    latency; nothing in a worker waits on a client.

    Bounds: at most ``max_connections`` connections. A new one has ``header_timeout_s``
    to send its request head (else 408, or closed if it sent nothing); a kept-alive one,
    ``idle_timeout_s`` to begin its next request; an answer ``write_timeout_s`` to be
    read. When full, a newcomer takes the place of the parked connection that would be
    closed first anyway (closing; else, of those parked ``EVICT_AFTER_S`` or longer with
    nothing unread, one waiting for its request head, then idle, longest first); when
    none is, it is answered 503 and closed.
    """

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        market: ServedMarket,
        max_connections: int = MAX_CONNECTIONS,
        max_workers: int = MAX_WORKERS,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        if max_connections < 1 or max_workers < 1:
            raise ValueError("max_connections and max_workers must be at least 1")
        self.market = market
        self.max_connections = max_connections
        self.max_workers = max_workers
        self.header_timeout_s = header_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        # The poller's: parked connections by state, each ordered by its deadline.
        self._heads: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._idle: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._writing: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._closing: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._busy = 0  # with a worker, or waiting for one
        self._selector: selectors.BaseSelector | None = None
        self._accept_again: float | None = None  # the listener rests until then
        # Between the poller and the workers.
        self._lock = threading.Condition()
        self._jobs: collections.deque[tuple[_Connection, bytes]] = collections.deque()
        self._free = 0  # workers not serving a request
        self._workers = 0
        self._results: collections.deque[tuple[_Connection, _Chunks, bool, int]] = (
            collections.deque()
        )
        self._running = False
        self._closed = False
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(address, _Handler)  # last: a failed bind calls server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def busy(self) -> int:
        """Requests with a worker or waiting for one (the poller's count)."""
        return self._busy

    @property
    def connections(self) -> int:
        """Connections held now (the poller's count: read it from its thread or idle)."""
        parked = len(self._heads) + len(self._idle) + len(self._writing) + len(self._closing)
        return parked + self._busy

    # -- the poller ----------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (or an exception, such as ``KeyboardInterrupt``)."""
        self._stopped.clear()
        self._accept_again = None
        try:
            self.socket.setblocking(False)
            with selectors.DefaultSelector() as selector:
                self._selector = selector
                try:
                    selector.register(self.socket, selectors.EVENT_READ)
                    selector.register(self._wake_r, selectors.EVENT_READ)
                    with self._lock:
                        self._running = True
                    while not self._stop.is_set():
                        self._poll(selector, poll_interval)
                finally:
                    self._drop_all()
                    self._selector = None
        finally:
            self._stop.clear()
            self._stopped.set()

    def _poll(self, selector: selectors.BaseSelector, poll_interval: float) -> None:
        for key, events in selector.select(self._timeout(poll_interval)):
            if key.fileobj is self.socket:
                self._accept()
            elif key.fileobj is self._wake_r:
                self._take_results()
            elif key.data.sock.fileno() < 0:
                continue  # closed earlier in this round (to make room)
            elif events & selectors.EVENT_WRITE:
                self._flush(key.data)
            else:
                self._receive(key.data)
        self._expire(time.monotonic())
        if self._accept_again is not None and time.monotonic() >= self._accept_again:
            self._accept_again = None
            selector.register(self.socket, selectors.EVENT_READ)

    def _drop_all(self) -> None:
        """Stopped: close every connection (a worker closes its own when done)."""
        with self._lock:
            self._running = False
            left = [conn for conn, *_ in self._results] + [conn for conn, _ in self._jobs]
            self._results.clear()
            self._jobs.clear()
        for conn in left:
            conn.sock.close()
        for parked in (self._heads, self._idle, self._writing, self._closing):
            while parked:
                self._close(next(iter(parked)))
        self._busy = 0

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()  # idle workers end; busy ones after their request
        self._wake_r.close()
        self._wake_w.close()

    def _timeout(self, poll_interval: float) -> float:
        deadlines = [
            next(iter(parked)).deadline
            for parked in (self._heads, self._idle, self._writing, self._closing)
            if parked
        ]
        if self._accept_again is not None:
            deadlines.append(self._accept_again)
        if not deadlines:
            return poll_interval
        return min(poll_interval, max(0.0, min(deadlines) - time.monotonic()))

    def _accept(self) -> None:
        for _ in range(64):  # then let the others have their turn
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the client gave up already, or out of descriptors
                out = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
                if exc.errno in out and not self._make_room():  # else one is free next round
                    self._rest_listener()
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.connections >= self.max_connections and not self._make_room():
                self._refuse(sock)
                continue
            conn = _Connection(sock, address)
            self._park(conn, self._heads, self.header_timeout_s, selectors.EVENT_READ)

    def _make_room(self) -> bool:
        """Close the parked connection that would be closed first anyway: one closing, else
        the oldest of those waiting for a request (never served, then idle) that has waited
        :data:`EVICT_AFTER_S` and has nothing unread (:func:`_unread`)."""
        if self._closing:
            self._close(next(iter(self._closing)))
            return True
        parked_by = time.monotonic() - EVICT_AFTER_S
        for parked, timeout in (
            (self._heads, self.header_timeout_s),
            (self._idle, self.idle_timeout_s),
        ):
            for conn in parked:
                if conn.deadline - timeout > parked_by:
                    break  # the rest were parked later still (each in deadline order)
                if not _unread(conn.sock):
                    self._close(conn)
                    return True
        return False

    def _rest_listener(self) -> None:
        """Stop watching the listening socket for a while (:data:`ACCEPT_BACKOFF_S`)."""
        if self._accept_again is None and self._selector is not None:
            self._selector.unregister(self.socket)
        self._accept_again = time.monotonic() + ACCEPT_BACKOFF_S

    def _refuse(self, sock: socket.socket) -> None:
        """Every connection is being served: 503, best effort, and closed."""
        with contextlib.suppress(OSError):
            for _ in range(16):  # what the client sent, so that closing does not reset
                if not sock.recv(65536):
                    break
        with contextlib.suppress(OSError):
            sock.send(
                _error_answer(
                    503,
                    f"Server is currently overloaded: {self.max_connections} connections "
                    "are being served. Retry shortly.",
                )
            )
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client is gone (or done, for a closing connection)
            self._close(conn)
            return
        if conn.where is self._closing:
            return  # read and dropped, so that closing does not reset the answer
        conn.buffer += data
        self._advance(conn)

    def _advance(self, conn: _Connection) -> None:
        """Drop what is to be skipped; a whole head goes to a worker."""
        buffer = conn.buffer
        if conn.skip:
            dropped = min(conn.skip, len(buffer))
            del buffer[:dropped]
            conn.skip -= dropped
        if buffer[:1] in (b"\r", b"\n"):  # empty lines before a request are ignored
            del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
            conn.scanned = 0
        if not buffer:
            return
        if conn.where is self._idle:  # the next request has begun: it has a head's time
            self._unpark(conn)
            self._park(conn, self._heads, self.header_timeout_s, selectors.EVENT_READ)
        end = _HEAD_END.search(buffer, max(0, conn.scanned - 3))
        if end is None:
            conn.scanned = len(buffer)
        # Over the bound whether its end has come yet or not (it comes in the same read
        # when the client sends the whole head at once).
        if (len(buffer) if end is None else end.end()) > MAX_HEAD_BYTES:
            too_long = buffer.find(b"\n", 0, MAX_HEAD_BYTES) < 0  # the line, or the headers
            status = 414 if too_long else 431
            what = "request line" if too_long else "request head"
            self._answer(
                conn,
                [_error_answer(status, f"The {what} is over {MAX_HEAD_BYTES} bytes.")],
                False,
                0,
            )
            return
        if end is None:
            return
        head = bytes(buffer[: end.end()])
        del buffer[: end.end()]
        conn.scanned = 0
        self._unpark(conn)
        self._watch(conn, 0)
        self._busy += 1
        self._dispatch(conn, head)

    def _take_results(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            results = list(self._results)
            self._results.clear()
        for conn, chunks, keep, skip in results:
            self._busy -= 1
            self._answer(conn, chunks, keep, skip)

    def _answer(self, conn: _Connection, chunks: _Chunks, keep: bool, skip: int) -> None:
        """Write ``chunks``; then the next request (``keep``), or close."""
        self._unpark(conn)
        conn.out.extend(memoryview(chunk) for chunk in chunks if chunk)
        conn.keep, conn.skip = keep, conn.skip + skip
        self._park(conn, self._writing, self.write_timeout_s, selectors.EVENT_WRITE)
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        out = conn.out
        try:
            while out:
                sent = conn.sock.send(out[0])
                if sent < len(out[0]):
                    out[0] = out[0][sent:]
                    return  # the rest when the client has read some
                out.popleft()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        self._unpark(conn)
        if not conn.keep:
            self._linger(conn)
            return
        self._park(conn, self._idle, self.idle_timeout_s, selectors.EVENT_READ)
        if conn.buffer:  # the next request may be in already
            self._advance(conn)

    def _linger(self, conn: _Connection) -> None:
        """Close after an answer: stop writing, and read (and drop) what the client still
        sends for a moment, so that the close does not reset the answer away."""
        conn.buffer.clear()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._park(conn, self._closing, LINGER_S, selectors.EVENT_READ)

    def _expire(self, now: float) -> None:
        for parked in (self._heads, self._idle, self._writing, self._closing):
            while parked:
                conn = next(iter(parked))
                if conn.deadline > now:
                    break
                if parked is self._heads and conn.buffer:  # a request begun, not ended
                    msg = f"The request did not arrive within {self.header_timeout_s:g} s."
                    self._answer(conn, [_error_answer(408, msg)], False, 0)
                else:  # asked nothing (idle, or never served), or not reading its answer
                    self._close(conn)

    def _park(
        self,
        conn: _Connection,
        where: collections.OrderedDict[_Connection, None],
        timeout: float,
        events: int,
    ) -> None:
        conn.deadline = time.monotonic() + timeout  # each state's order is its deadlines'
        conn.where = where
        where[conn] = None
        self._watch(conn, events)

    def _unpark(self, conn: _Connection) -> None:
        if conn.where is not None:
            del conn.where[conn]
            conn.where = None

    def _watch(self, conn: _Connection, events: int) -> None:
        selector = self._selector
        assert selector is not None
        if events == conn.events:
            return
        if not conn.events:
            selector.register(conn.sock, events, conn)
        elif not events:
            selector.unregister(conn.sock)
        else:
            selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Connection) -> None:
        self._unpark(conn)
        if conn.events:
            self._watch(conn, 0)
        conn.sock.close()
        if self._accept_again is not None:
            self._accept_again = 0.0  # a descriptor is free: accept at the round's end

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the poller is waking anyway; closed: stopped
            self._wake_w.send(b"\0")

    # -- the workers ---------------------------------------------------------------------

    def _dispatch(self, conn: _Connection, head: bytes) -> None:
        with self._lock:
            self._jobs.append((conn, head))
            start = len(self._jobs) > self._free and self._workers < self.max_workers
            if start:
                self._workers += 1
                self._free += 1
            self._lock.notify()
        if start:
            worker = threading.Thread(target=self._work, name="sltrader-exchange-worker")
            worker.daemon = True
            try:
                worker.start()
            except RuntimeError:  # no thread to be had: the workers there serve it
                with self._lock:
                    self._workers -= 1
                    self._free -= 1
                    # With no worker at all, nothing would ever take the job: its
                    # client would wait forever and its connection never be freed.
                    stranded = [] if self._workers else [job for job, _ in self._jobs]
                    if stranded:
                        self._jobs.clear()
                        msg = "Server is currently overloaded: no worker. Retry shortly."
                        answer = [_error_answer(503, msg)]
                        self._results.extend((job, answer, False, 0) for job in stranded)
                if stranded:
                    self._wake()  # answered as a worker's answer is

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._lock.wait()
                if not self._jobs:
                    self._free -= 1
                    self._workers -= 1
                    return
                conn, head = self._jobs.popleft()
                self._free -= 1
            chunks, keep, skip = self._serve(conn, head)
            try:  # what the socket takes now (most answers): the poller writes the rest
                chunks = _send_now(conn.sock, chunks)
            except OSError:  # the client is gone
                chunks, keep = [], False
            with self._lock:
                self._free += 1
                running = self._running
                if running:
                    self._results.append((conn, chunks, keep, skip))
            if running:
                self._wake()
            else:
                conn.sock.close()

    def _serve(self, conn: _Connection, head: bytes) -> tuple[list[bytes], bool, int]:
        """The answer to one request head, whether to keep the connection, and how many
        body bytes to skip."""
        try:
            handler = _Handler(conn.sock, conn.address, self, head)
        except Exception:  # a bug: the traceback on stderr, and a 500 in Binance's shape
            self.handle_error(conn.sock, conn.address)
            return [_error_answer(500, "An unknown error occurred.")], False, 0
        keep = not handler.close_connection
        return handler.answer.chunks, keep, handler.body_length if keep else 0


def _unread(sock: socket.socket) -> bool:
    """Whether a non-blocking ``sock`` has received data not read yet (closing it now
    would reset its client)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))  # b"": the client closed, nothing unread
    except OSError:  # nothing yet (BlockingIOError), or reset: the client is gone
        return False


def _send_now(sock: socket.socket, chunks: list[bytes]) -> list[bytes | memoryview]:
    """Send what a non-blocking ``sock`` takes without waiting; the rest."""
    if len(chunks) > 1 and sum(map(len, chunks)) <= 65536:
        chunks = [b"".join(chunks)]  # a small answer in one segment: headers and body
    for i, chunk in enumerate(chunks):
        try:
            sent = sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(chunk):
            return [memoryview(chunk)[sent:], *chunks[i + 1 :]]
    return []


def start_server(
    market: ServedMarket, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> tuple[ExchangeServer, threading.Thread]:
    """Serve ``market`` on a daemon thread; stop with ``server.shutdown()``.

    ``options``: :class:`ExchangeServer`'s bounds (``max_connections``, ...).
    """
    server = ExchangeServer((host, port), market, **options)
    thread = threading.Thread(target=server.serve_forever, name="sltrader-exchange", daemon=True)
    thread.start()
    return server, thread


# -- the client --------------------------------------------------------------------------


#: The statuses an exchange refuses a request with for its rate limit (Binance: 418 after
#: repeated 429s).
RATE_LIMITED = (418, 429)


class _Retry(urllib3.Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped at ``max_wait_s`` (1 s when the answer
    names no wait), and a request that timed out not sent again (``timeout_s`` bounds it)."""

    def __init__(self, *, max_wait_s: float = math.inf, **options: Any) -> None:
        super().__init__(**options)
        self.max_wait_s = max_wait_s

    def new(self, **options: Any) -> _Retry:
        retry = super().new(**options)
        retry.max_wait_s = self.max_wait_s
        return retry

    # Our own cap: Retry's retry_after_max came with urllib3 2.7 (we take any 2.x), and is
    # whole seconds.
    def get_retry_after(self, response: urllib3.BaseHTTPResponse) -> float | None:
        try:
            seconds = super().get_retry_after(response)
        except urllib3.exceptions.InvalidHeader:
            seconds = None
        return min(1.0 if seconds is None else seconds, self.max_wait_s)

    def increment(self, *args: Any, **kwargs: Any) -> _Retry:
        if _timed_out(kwargs.get("error")):
            raise kwargs["error"]
        return super().increment(*args, **kwargs)


def _timed_out(error: object) -> bool:
    # NewConnectionError is a ConnectTimeoutError in urllib3 2, though nothing timed out.
    return isinstance(error, urllib3.exceptions.TimeoutError) and not isinstance(
        error, urllib3.exceptions.NewConnectionError
    )


class HttpExchange:
    """The host's exchange over HTTP (the :class:`~sltrader_plugins.host.exchange.Exchange`
    protocol): a served replay exchange, or an API of the same shape.

    The threads share one pool of keep-alive connections (urllib3's). Every request is
    bounded by ``timeout_s`` (connect, and each read); one that meets a connection the
    server closed is sent again at once, once. ``endTime`` is ``clock.now()``.

    A 429 raises :class:`RateLimitExceeded` from ``fetch_klines`` (the host skips the
    symbol); ``top_symbols`` waits as ``Retry-After`` says (at most
    ``max_retry_after_s``) and tries again, at most ``universe_attempts`` times in all,
    then raises it too (the host scans the previous universe). Anything else that fails is
    one :class:`ExchangeError` naming the URL.
    """

    def __init__(
        self,
        base_url: str,
        clock: Clock,
        timeout_s: float = 10.0,
        universe_attempts: int = 3,
        max_retry_after_s: float = 2.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ExchangeError(f"exchange URL must be http://HOST:PORT, got {base_url!r}")
        try:
            _ = parts.port  # a bad port raises here
        except ValueError:
            raise ExchangeError(f"exchange URL has a bad port: {base_url!r}") from None
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.timeout_s = timeout_s
        self.universe_attempts = universe_attempts
        self.max_retry_after_s = max_retry_after_s
        # GETs are idempotent: a connection that fails (closed while idle) is tried again.
        self._retries = _Retry(
            total=None,
            connect=1,
            read=1,
            redirect=0,
            other=0,
            status=0,
            raise_on_status=False,
            max_wait_s=max_retry_after_s,
        )
        # One kept connection for each worker thread a workload may have (Workload.workers).
        self._http = urllib3.PoolManager(
            num_pools=1,
            maxsize=256,
            block=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        )
        self._lock = threading.Lock()
        self._requests = 0
        self.rate_limited = 0

    @property
    def requests(self) -> int:
        """Requests sent so far (answered, refused or failed)."""
        return self._requests

    def market_info(self) -> dict[str, Any]:
        """The served market (``/sltrader/v1/market``); not counted as a request."""
        return self._get("/sltrader/v1/market", {}, count=False)

    def stats(self) -> dict[str, Any]:
        """The server's counters (``/sltrader/v1/stats``); not counted as a request."""
        return self._get("/sltrader/v1/stats", {}, count=False)

    def check_market(self, market: MarketConfig, symbols: Sequence[str]) -> None:
        """Refuse a server that serves another market than ``market`` over ``symbols``.

        :raises ExchangeError: one line naming what differs.
        """
        info = self.market_info()
        expected = {**attrs.asdict(market), "symbols": list(symbols)}
        differ = [key for key in expected if info.get(key) != expected[key]]
        if differ:
            shown = ", ".join(
                f"{key} {info.get(key)!r} (this trader: {expected[key]!r})"
                if key != "symbols"
                else f"symbols ({len(info.get(key) or [])} listed; this trader: {len(symbols)})"
                for key in differ
            )
            raise ExchangeError(
                f"the exchange at {self.base_url} serves another market: {shown}; start it "
                "with the same --size, --seed, --cycles and [host] settings as the trader"
            )

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        rows = self._get(
            "/api/v3/klines",
            {
                "symbol": symbol,
                "interval": timeframe,
                "limit": str(limit),
                "endTime": str(end_time_ms(self.clock.now())),
            },
        )
        try:
            columns = [[float(row[i]) for row in rows] for i in range(1, 6)]
            open_time = np.array([row[0] for row in rows], dtype=np.float64) / 1000.0
            return Klines(symbol, timeframe, open_time, *columns)
        except (TypeError, ValueError, IndexError) as exc:
            raise ExchangeError(f"{self.base_url}: malformed klines for {symbol}: {exc}") from None

    def top_symbols(self, n: int) -> list[str]:
        retries = self._retries.new(
            status=self.universe_attempts - 1, status_forcelist=RATE_LIMITED
        )
        rows = self._get("/api/v3/ticker/24hr", {"endTime": end_time_ms(self.clock.now())}, retries)
        try:
            levels = [(str(row["symbol"]), float(row["quoteVolume"])) for row in rows]
        except (TypeError, ValueError, KeyError) as exc:
            raise ExchangeError(f"{self.base_url}: malformed ticker: {exc!r}") from None
        return rank_symbols(levels, n)

    def close(self) -> None:
        """Close the kept connections (a later request opens one again)."""
        self._http.clear()

    # -- internals ------------------------------------------------------------------------

    def _get(
        self,
        path: str,
        params: Mapping[str, Any],
        retries: _Retry | None = None,
        count: bool = True,
    ) -> Any:
        if count:
            with self._lock:
                self._requests += 1
        url = self.base_url + path
        try:
            response = self._http.request(
                "GET", url, fields=params or None, retries=retries or self._retries, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ExchangeError(f"{url}: {_failure(exc, self.timeout_s)}") from None
        # Answers urllib3 retried (top_symbols' 429s) were requests sent, and refused.
        history = response.retries.history if response.retries else ()
        retried = [entry.status for entry in history if entry.status is not None]
        with self._lock:
            self._requests += len(retried) if count else 0
            self.rate_limited += sum(s in RATE_LIMITED for s in [*retried, response.status])
        if response.status == 200:
            try:
                return json.loads(response.data)
            except ValueError:
                raise ExchangeError(f"{url}: the answer is not JSON") from None
        code, message = _error(response.data)
        if response.status in RATE_LIMITED:
            retry = response.headers.get("Retry-After")
            retry_s = float(retry) if retry and retry.isdigit() else None
            raise RateLimitExceeded(f"rate limited by {self.base_url}: {message}", retry_s)
        if code == -1121:
            raise UnknownSymbolError(f"{self.base_url}: {message}: {params.get('symbol')!r}")
        raise ExchangeError(f"{url}: HTTP {response.status}: {message}")


def _failure(exc: urllib3.exceptions.HTTPError, timeout_s: float) -> str:
    """What went wrong under urllib3's wrappers, in one line."""
    reason: Exception = getattr(exc, "reason", None) or exc  # MaxRetryError's
    if _timed_out(reason):
        return f"no answer within {timeout_s:g} s"
    inner = reason.args[-1] if reason.args else None  # ProtocolError: (text, what it met)
    if isinstance(reason, urllib3.exceptions.ProtocolError) and isinstance(inner, Exception):
        reason = inner
    cause = reason.__cause__ or reason  # a NewConnectionError's OSError
    return "connection failed: " + " ".join(str(cause).split())


def _error(body: bytes) -> tuple[int | None, str]:
    """An error answer's code and message (Binance's ``{"code", "msg"}``, else the text)."""
    try:
        answer = json.loads(body)
        return int(answer["code"]), f"{answer['msg']} (code {answer['code']})"
    except (ValueError, KeyError, TypeError):
        return None, body[:200].decode("utf-8", "replace").strip() or "no message"


def served_exchange(url: str | None) -> Callable[[ReplayExchange], Any] | None:
    """For ``Host(wrap_exchange=...)``: the exchange served at ``url`` in place of the
    host's replay exchange (checked to serve the host's own market: :class:`ExchangeError`
    otherwise); ``None`` without a ``url``, and the host trades on its own replay."""
    if url is None:
        return None

    def wrap(embedded: ReplayExchange) -> HttpExchange:
        exchange = HttpExchange(url, embedded.clock)
        exchange.check_market(embedded.market, embedded.symbols)
        return exchange

    return wrap


def end_time_ms(now: float) -> int:
    """``now`` as an exchange's ``endTime``: whole milliseconds, rounded down.

    Candles close on whole seconds, so a candle closes by ``now`` exactly when it closes
    by this; the microsecond of slack absorbs a clock sum's float error (a ``now`` of
    ``x.999999999`` meant ``x + 1``).
    """
    return math.floor(now * 1000.0 + 1e-3)
