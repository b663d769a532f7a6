"""The plugin's configuration section, ``[plugins.<name>]`` (parsed by ``on_start``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import attrs

from sltrader_plugins import SettingError, finite, integer

SCHEMES = ("redis", "rediss", "unix")
URL_EXPECTED = "a Redis URL such as 'redis://127.0.0.1:6379/0' (redis://, rediss:// or unix://)"
NAMESPACE_EXPECTED = "1 to 64 letters, digits or the characters . _ - : (a key prefix)"
_NAMESPACE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _url(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _parses(value):
        raise SettingError(attribute.name, URL_EXPECTED, value)


def _parses(url: str) -> bool:
    # The checks redis-py makes when it connects, made now: a typo stops start-up with the
    # key named instead of showing up as an outage at the first fetch.
    try:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            return False
        if parts.scheme == "unix":
            return bool(parts.path)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        database = parts.path.lstrip("/")
        return bool(parts.hostname) and (database == "" or database.isdigit())
    except ValueError:
        return False


def _namespace(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise SettingError(attribute.name, NAMESPACE_EXPECTED, value)


@attrs.frozen
class SharedConfig:
    """How traders share through Redis, validated (docs/shared.md).

    Every trader that shares one exchange must use the same ``url``, ``namespace``,
    ``requests_per_minute`` and ``burst``; the rest is each trader's own.

    :ivar url: the Redis server; unset: the plugin does not share (a trader never talks
        to a Redis server it was not pointed at, which may hold another market's series).
    :ivar namespace: the prefix of every key; one per market (exchange and its data), so
        traders of different markets on one Redis never serve each other's series.
    :ivar lease_ms: a fetch's lease lives this long: if its holder dies, another trader
        fetches after it expires. Longer than the slowest fetch (renewed after a pacing wait).
    :ivar wait_ms: the longest a trader waits for another trader's fetch of a series
        before it fetches the series itself (0: never waits, only serves what is there).
    :ivar timeout_ms: the bound of one Redis call (connect, send, answer).
    :ivar requests_per_minute: the exchange budget of all traders together, in the
        exchange's rate-limit units; 0: no pacing.
    :ivar burst: the most units granted at once after a quiet spell.
    :ivar retry_s: after Redis failed, each trader fetches and paces on its own this long
        before it tries Redis again.
    :ivar max_pace_wait_ms: the longest one request waits for the budget; then it goes
        anyway (counted as ``pace_timeouts``, and debited from the budget).
    :ivar share_alone: share while no other trader is present too (publish for traders
        still to come, pace on the shared budget). Off: a trader alone steps aside and
        costs no Redis call per fetch (one per scan, to see who is present).
    """

    url: str | None = attrs.field(default=None, validator=_url)
    namespace: str = attrs.field(default="sltrader", validator=_namespace)
    lease_ms: int = attrs.field(default=5000, validator=integer(min=100, max=600_000))
    wait_ms: int = attrs.field(default=6000, validator=integer(min=0, max=600_000))
    timeout_ms: int = attrs.field(default=250, validator=integer(min=10, max=60_000))
    requests_per_minute: float = attrs.field(default=0.0, validator=finite(min=0, max=1e7))
    burst: int = attrs.field(default=10, validator=integer(min=1, max=1_000_000))
    retry_s: float = attrs.field(default=5.0, validator=finite(above=0, max=3600))
    max_pace_wait_ms: int = attrs.field(default=5000, validator=integer(min=0, max=600_000))
    share_alone: bool = False
