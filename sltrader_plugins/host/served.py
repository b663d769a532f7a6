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
with 429, and so on. Symbols contain ``/``: clients URL-encode them.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import numpy as np

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
#: How many connections the server serves at once (a thread each); more wait to be accepted.
MAX_CONNECTIONS = 256
#: The kline intervals served: Binance's, but for those shorter than the replay's minute.
INTERVALS = frozenset(
    ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
)
#: An idle keep-alive connection is closed after this long (seconds).
IDLE_TIMEOUT_S = 5.0
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients of a real API use it
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall
    timeout = IDLE_TIMEOUT_S
    server: ExchangeServer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
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
        routes = {"/api/v3/klines": market.klines, "/api/v3/ticker/24hr": market.ticker}
        route = routes.get(url.path)
        if route is None:
            self._error(_ApiError(404, -1000, f"Unknown path {url.path}."))
            return
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

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/sltrader/v1/window/restart":
            self._error(_ApiError(404, -1000, f"Unknown path {self.path}."))
            return
        self.server.market.limiter.restart_window()
        self._send(200, json.dumps(self.server.market.limiter.stats()).encode())

    def _error(self, exc: _ApiError, headers: Mapping[str, str] | None = None) -> None:
        self._send(exc.status, json.dumps({"code": exc.code, "msg": exc.msg}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request
        pass


class ExchangeServer(ThreadingHTTPServer):
    """A threaded HTTP server over a :class:`ServedMarket`, at most ``MAX_CONNECTIONS``
    connections served at once (a thread each); further ones wait to be accepted."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], market: ServedMarket, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        super().__init__(address, _Handler)
        self.market = market
        self._slots = threading.BoundedSemaphore(max_connections)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def start_server(
    market: ServedMarket, host: str = "127.0.0.1", port: int = 0
) -> tuple[ExchangeServer, threading.Thread]:
    """Serve ``market`` on a daemon thread; stop with ``server.shutdown()``."""
    server = ExchangeServer((host, port), market)
    thread = threading.Thread(target=server.serve_forever, name="sltrader-exchange", daemon=True)
    thread.start()
    return server, thread


# -- the client --------------------------------------------------------------------------


class HttpExchange:
    """The host's exchange over HTTP (the :class:`~sltrader_plugins.host.exchange.Exchange`
    protocol): a served replay exchange, or an API of the same shape.

    Each thread keeps its own keep-alive connection. Every request is bounded by
    ``timeout_s`` (connect, and each read). ``endTime`` is ``clock.now()``.

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
            self._port = parts.port or 80
        except ValueError:
            raise ExchangeError(f"exchange URL has a bad port: {base_url!r}") from None
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._prefix = parts.path.rstrip("/")
        self.clock = clock
        self.timeout_s = timeout_s
        self.universe_attempts = universe_attempts
        self.max_retry_after_s = max_retry_after_s
        self._local = threading.local()
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
        attempt = 1
        while True:
            try:
                rows = self._get("/api/v3/ticker/24hr", {"endTime": end_time_ms(self.clock.now())})
                break
            except RateLimitExceeded as exc:
                if attempt >= self.universe_attempts:
                    raise
                attempt += 1
                wait = exc.retry_after_s if exc.retry_after_s is not None else 1.0
                time.sleep(min(wait, self.max_retry_after_s))
        try:
            levels = [(str(row["symbol"]), float(row["quoteVolume"])) for row in rows]
        except (TypeError, ValueError, KeyError) as exc:
            raise ExchangeError(f"{self.base_url}: malformed ticker: {exc!r}") from None
        return rank_symbols(levels, n)

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # -- internals ------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
            self._local.connection = connection
        return connection

    def _get(self, path: str, params: Mapping[str, Any], count: bool = True) -> Any:
        if count:
            with self._lock:
                self._requests += 1
        target = self._prefix + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        for attempt in (1, 2):
            connection = self._connection()
            reused = connection.sock is not None
            try:
                connection.request("GET", target)
                response = connection.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: reconnect
                raise ExchangeError(f"{self.base_url}{path}: connection failed: {exc}") from None
            except TimeoutError:
                self.close()
                raise ExchangeError(
                    f"{self.base_url}{path}: no answer within {self.timeout_s:g} s"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise ExchangeError(f"{self.base_url}{path}: {exc}") from None
        if response.status == 200:
            try:
                return json.loads(body)
            except ValueError:
                raise ExchangeError(f"{self.base_url}{path}: the answer is not JSON") from None
        code, message = _error(body)
        if response.status in (418, 429):
            with self._lock:
                self.rate_limited += 1
            retry = response.getheader("Retry-After")
            retry_s = float(retry) if retry and retry.isdigit() else None
            raise RateLimitExceeded(f"rate limited by {self.base_url}: {message}", retry_s)
        if code == -1121:
            raise UnknownSymbolError(f"{self.base_url}: {message}: {params.get('symbol')!r}")
        raise ExchangeError(f"{self.base_url}{path}: HTTP {response.status}: {message}")


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
