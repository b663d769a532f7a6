"""The shared plugin's hook implementations.

The host instantiates :class:`SharedPlugin` once (a class entry point). The exchange
hooks run in whichever thread fetches, many at once; each returns within its own bound
(``wait_ms``, ``max_pace_wait_ms``, ``timeout_ms`` per Redis call) whatever Redis does,
and none raises for a Redis problem: without Redis the trader fetches and paces on its
own. Nothing runs in the background.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sltrader_plugins import (
    ExchangeRequest,
    HostServices,
    KlineFetch,
    Klines,
    PluginSettings,
    hookimpl,
    nonblocking_while,
)
from sltrader_shared.config import SharedConfig

if TYPE_CHECKING:
    from sltrader_shared.shared import Shared

log = logging.getLogger(__name__)


class SharedPlugin:
    """Shares fetched series, one fetch per series per close, and the request budget
    among traders through Redis.

    Its settings are its ``[plugins.<name>]`` section, whatever name it is loaded under.
    Before ``on_start`` (and after ``on_shutdown``) every hook is a no-op.
    """

    def __init__(self) -> None:
        self.config: SharedConfig | None = None
        self.shared: Shared | None = None
        self._final: dict[str, float] | None = None  # the counters at shutdown, for a report

    @hookimpl
    def on_start(self, services: HostServices, settings: PluginSettings) -> None:
        # ConfigError propagates: a wrong setting stops start-up with the key named.
        config = settings.parse(SharedConfig)
        self.config = config
        if config.url is None:
            log.info(
                "plugin %r: no url in [plugins.%s]: not sharing, this trader fetches alone",
                settings.name,
                settings.name,
            )
            return
        # Imported only now: redis-py takes longer to import than the rest of the plugins
        # together, and a trader that does not share should not pay for it at start-up.
        from sltrader_shared.link import RedisLink
        from sltrader_shared.shared import Shared

        shared = Shared(config, RedisLink(config, settings.name))
        # Present from the start: traders started together share from their first scan,
        # and one alone steps aside before it (a Redis that is not there answers at once,
        # or within timeout_ms).
        shared.mark_present(scan=False)
        self.shared = shared

    def _idle(self) -> bool:
        """No Redis call is due: not sharing, or marked present less than a second ago."""
        return self.shared is None or not self.shared.mark_due()

    @hookimpl
    @nonblocking_while(_idle)  # a fast trader pays no hand-over for its many idle scans
    def before_scan(self) -> None:
        # On the main loop, at most one Redis call a second: whether anyone is there to
        # share with.
        if self.shared is not None:
            self.shared.mark_present()

    @hookimpl
    def serve_klines(self, fetch: KlineFetch) -> Klines | None:
        if self.shared is None:
            return None
        return self.shared.serve(fetch)

    @hookimpl
    def after_fetch_klines(self, fetch: KlineFetch, klines: Klines | None) -> None:
        if self.shared is not None:
            self.shared.fetched(fetch, klines)

    @hookimpl
    def pace_exchange_request(self, request: ExchangeRequest) -> None:
        if self.shared is not None:
            self.shared.pace(request.weight, request.fetch)

    @hookimpl
    def report_summary(self) -> str | None:
        if self.config is None:
            return None
        if self.config.url is None:
            return "not sharing: no url"
        m = self.shared.metrics() if self.shared is not None else self._final
        if m is None:
            return None
        said = (
            f"{m.get('served', 0):.0f} fetches another trader made, "
            f"{m.get('published', 0):.0f} published for others, "
            f"{m['traders_present']:.0f} trader(s) present at the last scan"
        )
        if m["step_asides"]:
            now = "aside now" if m["stepped_aside"] else "sharing now"
            said += (
                f"; alone, stepped aside {m['step_asides']:.0f}x, "
                f"{m.get('alone_scans', 0):.0f} scans alone, {now}"
            )
        return said

    @hookimpl
    def report_metrics(self) -> Mapping[str, float] | None:
        if self.shared is None:
            return self._final
        return self.shared.metrics()

    @hookimpl
    def on_shutdown(self) -> None:
        shared, self.shared = self.shared, None
        if shared is not None:
            shared.close()
            self._final = shared.metrics()
