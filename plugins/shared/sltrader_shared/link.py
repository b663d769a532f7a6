"""``RedisLink``: every Redis call goes through :meth:`RedisLink.run`, and so does every fault.

A Redis that is down, slow or answers with an error must never reach the trader: the call
is bounded (``timeout_ms`` on connect, send and answer; one immediate retry on a fresh
connection for a broken one, none for a timeout), the fault is counted, logged once per
outage with the server's address, and the link stays *down* for ``retry_s``: callers get
:class:`Unavailable` at once and do without Redis (fetch and pace on their own). After
``retry_s`` one caller probes Redis again (the others stay in fallback meanwhile); when it
answers, sharing resumes.

The client is made at the first call (not at start-up), so a trader whose Redis is not
there starts as fast as without the plugin. No lock is held during a Redis call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sltrader_shared import scripts
from sltrader_shared.config import SharedConfig

log = logging.getLogger("sltrader_shared")

T = TypeVar("T")


class Unavailable(Exception):
    """Redis cannot be used now (down, slow, or in the ``retry_s`` after a fault)."""


def redacted(url: str) -> str:
    """``url`` without its password, for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


class Scripts:
    """The Lua scripts, registered with one client (redis-py loads them on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        self.claim = client.register_script(scripts.CLAIM)
        self.publish = client.register_script(scripts.PUBLISH)
        self.renew = client.register_script(scripts.RENEW)
        self.take = client.register_script(scripts.TAKE)


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
        made = Scripts(client)
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
        if first:
            log.warning(
                "%s: Redis at %s failed (%s: %s); each trader fetches and paces on its own, "
                "retrying every %g s",
                self.name,
                redacted(self.url),
                type(exc).__name__,
                " ".join(str(exc).split()) or "no detail",  # one line
                self.config.retry_s,
            )

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
                "redis_errors": self.errors,
                "outages": self.outages,
                "fallback": int(self._down_since is not None),
            }
