"""``RedisLink``: every Redis call goes through :meth:`RedisLink.run`, and so does every fault.

A Redis that is down, slow or answers with an error must never reach the trader: the call
is bounded (``timeout_ms`` on connect, send and answer; one immediate retry on a fresh
connection for a broken one, none for a timeout), the fault is counted, logged once per
outage with the server's address, and the link stays *down* for ``retry_s``: callers get
:class:`Unavailable` at once and do without Redis (fetch and pace on their own). After
``retry_s`` one caller probes Redis again (the others stay in fallback meanwhile); when it
answers, sharing resumes.

The client is made at the first call: the plugin's mark of presence at start-up, which a
Redis that is not there refuses at once (or after ``timeout_ms``, one host that does not
answer). No lock is held during a Redis call.

The scripts also repair what another client left under the plugin's keys (a series
header no trader could have written, garbage in the budget): :class:`Scripts` counts each
repair here (``bad_headers``, ``budget_resets``) and the first of each kind is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sltrader_plugins import Tally
from sltrader_shared import scripts
from sltrader_shared.config import SharedConfig

log = logging.getLogger("sltrader_shared")

T = TypeVar("T")


#: The repairs a script may make, each counted (and logged once) under its name.
REPAIRS = ("bad_headers", "budget_resets")


class Unavailable(Exception):
    """Redis cannot be used now (down, slow, or in the ``retry_s`` after a fault)."""


def redacted(url: str) -> str:
    """``url`` without its password, for a log line."""
    parts = urlsplit(url)
    # redis-py also takes it as ?password=...
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any(key == "password" for key, _ in query):
        return url
    head = url.partition("?")[0]  # as written: urlunsplit would make unix:///p unix:/p
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{_host_port(parts.netloc)}"
        head = urlunsplit(parts._replace(netloc=netloc, query=""))
    if not query:
        return head
    masked = [(key, "***" if key == "password" else value) for key, value in query]
    return f"{head}?{urlencode(masked, safe='*')}"


def _host_port(netloc: str) -> str:
    # as written, IPv6 brackets included (urlsplit's hostname drops them)
    return netloc.rpartition("@")[2]


# What Redis answers a client that did not authenticate, or with a wrong password, when
# redis-py does not raise its AuthenticationError for it (in a command's reply).
_AUTH_SIGNS = ("NOAUTH", "WRONGPASS", "HELLO must be called with the client already authenticated")


def refusal(url: str, exc: BaseException) -> str | None:
    """What Redis refusing to authenticate means for the operator; ``None`` for any other
    fault. Never the password: the hint shows where it goes, not what it is."""
    detail = str(exc)
    if not isinstance(
        exc, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError
    ) and not any(sign in detail for sign in _AUTH_SIGNS):
        return None
    if redacted(url) != url:  # it has a password
        return "refused the connection: the user or password in the url is wrong"
    parts = urlsplit(url)
    netloc = f"{parts.username or ''}:PASSWORD@{_host_port(parts.netloc)}"
    hint = urlunsplit(parts._replace(netloc=netloc))
    return f"refused the connection: it needs a password (put it in the url, {hint})"


def _text(value: bytes | str) -> str:
    # bytes, unless the url asked redis-py to decode replies (decode_responses=true)
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class Scripts:
    """The Lua scripts, registered with one client (redis-py loads them on first use).

    ``publish`` and ``take`` are called as redis-py's scripts are, and answer as they
    used to (stored 0 or 1; the wait in ms, 0 for a grant); the repairs the scripts
    report go to ``repaired(counter, what)``.
    """

    def __init__(
        self, client: redis.Redis, repaired: Callable[[str, str], None], max_wait_ms: int
    ) -> None:
        self.claim = client.register_script(scripts.CLAIM)
        self.renew = client.register_script(scripts.RENEW)
        self.presence = client.register_script(scripts.PRESENCE)
        self.leave = client.register_script(scripts.LEAVE)
        self._publish = client.register_script(scripts.PUBLISH)
        self._take = client.register_script(scripts.TAKE)
        self._repaired = repaired
        # 0 means a grant (already debited): a wait is never below 1 ms.
        self._max_wait_ms = max(1, max_wait_ms)

    def publish(self, keys: list[str], args: list[Any]) -> int:
        """1 if the series was stored (over garbage too), 0 if a newer one is there."""
        stored, garbage = self._publish(keys=keys, args=args)
        if garbage:
            self._repaired(
                "bad_headers",
                f"{keys[0]} held a series header closing at {_text(garbage)}, which no "
                "trader could have written; replaced it",
            )
        return int(stored)

    def take(self, keys: list[str], args: list[Any]) -> int:
        """0 if the budget granted (and debited) the weight, else ms to wait, at most
        ``max_pace_wait_ms``: after that ``pace`` goes anyway."""
        wait, reset = self._take(keys=keys, args=args)
        if reset:
            self._repaired(
                "budget_resets", f"{keys[0]} held garbage, not a token bucket; reset it to empty"
            )
        wait = int(wait)
        return 0 if wait == 0 else min(max(wait, 1), self._max_wait_ms)


class RedisLink:
    """One trader's connection to Redis, and its fallback state.

    :param config: the plugin's settings (``url``, ``timeout_ms``, ``retry_s``).
    :param name: the plugin's entry-point name, for the log line.
    :param monotonic: the clock of ``retry_s`` (tests replace it).
    """

    def __init__(
        self, config: SharedConfig, name: str, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if config.url is None:
            raise ValueError("a RedisLink needs the Redis url")
        self.url: str = config.url
        self.config = config
        self.name = name
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._client: redis.Redis | None = None
        self._scripts: Scripts | None = None
        self._down_since: float | None = None  # None: Redis is used
        self._retry_at = 0.0
        self._probing = False
        self._closed = False
        self.errors = 0
        self.outages = 0
        self._repairs = Tally()  # by counter (REPAIRS); not guarded by _lock: its own

    @property
    def down(self) -> bool:
        """Whether callers do without Redis now."""
        with self._lock:
            return self._down_since is not None or self._closed

    def run(self, call: Callable[[redis.Redis, Scripts], T]) -> T:
        """``call(client, scripts)``, or :class:`Unavailable` (never a Redis error).

        :raises Unavailable: Redis is down or failed this call (counted and logged).
        """
        with self._lock:
            if self._closed:
                raise Unavailable
            probe = False
            if self._down_since is not None:
                if self._probing or self._monotonic() < self._retry_at:
                    raise Unavailable
                self._probing = probe = True
            client, registered = self._client, self._scripts
        try:
            if client is None or registered is None:
                client, registered = self._connect()
            result = call(client, registered)
        except (redis.RedisError, OSError, ValueError) as exc:
            # ValueError: a URL redis-py refuses although the config check passed it.
            self._failed(client, exc)
            raise Unavailable from None
        except BaseException:
            if probe:  # not Redis's fault: let the next caller probe
                with self._lock:
                    self._probing = False
            raise
        if probe:
            self._recovered()
        return result

    def close(self) -> None:
        """Closes the connections; every later call is :class:`Unavailable`."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- internals ------------------------------------------------------------------

    def _connect(self) -> tuple[redis.Redis, Scripts]:
        # No I/O here: redis-py connects on the first command. Two threads may both make
        # a client at the first call; the first one stored is kept, the other closed.
        timeout = self.config.timeout_ms / 1000
        client = redis.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One retry, at once, for a connection that broke (the server restarted since
            # it was pooled); none for a timeout, which would double the bound.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            health_check_interval=0,
            client_name=f"sltrader-{self.name}",
        )
        made = Scripts(client, self.repaired, self.config.max_pace_wait_ms)
        with self._lock:
            if self._client is None and not self._closed:
                self._client, self._scripts = client, made
            kept, kept_scripts = self._client, self._scripts
        if kept is not client:
            client.close()
        if kept is None or kept_scripts is None:  # closed meanwhile
            raise Unavailable
        return kept, kept_scripts

    def _failed(self, client: redis.Redis | None, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            first = self._down_since is None
            now = self._monotonic()
            if first:
                self._down_since = now
                self.outages += 1
            self._retry_at = now + self.config.retry_s
            self._probing = False
        # Pooled idle connections are likely as dead as this one: drop them so the probe
        # after retry_s connects afresh. (In-use ones are their threads' to drop.)
        if client is not None:
            client.connection_pool.disconnect(inuse_connections=False)
        if not first:
            return
        # redis-py's words for a missing password ("HELLO must be called with the client
        # already authenticated") do not tell an operator what to do: say it plainly.
        detail = " ".join(str(exc).split()) or "no detail"  # one line
        why = refusal(self.url, exc) or f"failed ({type(exc).__name__}: {detail})"
        log.warning(
            "%s: Redis at %s %s; each trader fetches and paces on its own, retrying every %g s",
            self.name,
            redacted(self.url),
            why,
            self.config.retry_s,
        )

    def repaired(self, counter: str, what: str) -> None:
        """Counts a repair a script made; logs the first of each kind (the others would
        repeat it for every key another client spoils)."""
        if self._repairs.add(counter):
            log.warning("%s: %s (counted as %s, logged once)", self.name, what, counter)

    def _recovered(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
            self._probing = False
        if since is not None:
            log.info(
                "%s: Redis at %s answers again after %.1f s; sharing resumed",
                self.name,
                redacted(self.url),
                self._monotonic() - since,
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{name: self._repairs.count(name) for name in REPAIRS},
                "redis_errors": self.errors,
                "outages": self.outages,
                "fallback": int(self._down_since is not None),
            }
