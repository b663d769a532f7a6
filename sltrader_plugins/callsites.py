"""``Plugins``: the whole contract as a trader calls it, one to three lines per call site.

A trader that knows nothing of pluggy loads its plugins, starts them with its services,
and wraps the points of its own code the hooks are about::

    plugins = Plugins.load()                       # entry points, SLTRADER_PLUGINS, sltrader.toml
    plugins.start(model=model, cache=cache, clock=clock, base_timeframe="1h", workers=8)
    with plugins.scan(symbols):                    # before_scan ... on_scan_complete
        results = list(pool.map(analyze_symbol, symbols))

Each method is a thin, documented use of the hooks in :mod:`sltrader_plugins.hookspecs`;
the manager's guard stands behind every one, so a plugin's fault never reaches the
trader's code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from sltrader_plugins.buffers import DEFAULT_BUFFERS
from sltrader_plugins.cache import Fetch
from sltrader_plugins.config import Config, load_config
from sltrader_plugins.exchange_requests import ExchangeRequest, KlineFetch
from sltrader_plugins.klines import Klines, served_fault
from sltrader_plugins.manager import PluginInfo, PluginManager, Prediction
from sltrader_plugins.protocols import Clock, HostServices, KlineCache, Model
from sltrader_plugins.signals import Signal
from sltrader_plugins.timeframes import closes_between, last_close_time


class Plugins:
    """A trader's plugins: loaded, started, and called at the trader's own points.

    Load and start on the main thread before any worker runs; afterwards ``analyzing``,
    ``build_features`` and ``predict`` may be called from many threads at once, the
    other methods from the main loop.
    """

    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager
        self.hook = manager.hook
        self._services: HostServices | None = None
        self._announced_until = 0.0
        self._closed = False

    @classmethod
    def load(
        cls,
        config: Config | Path | None = None,
        *,
        plugins: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Plugins:
        """Find and load the installed plugins.

        :param config: the configuration, or the path of its file; ``None`` reads
            ``sltrader.toml`` (or ``pyproject.toml``'s ``[tool.sltrader]``) in the
            working directory, if there is one.
        :param plugins: the enable list of this run (``"batching,warming"``; ``""``: none),
            ahead of ``SLTRADER_PLUGINS`` and the file.
        :raises ConfigError: the file cannot be read or holds a wrong value.
        :raises PluginError: an enable list names a plugin that is not installed.
        """
        if not isinstance(config, Config):
            config = load_config(config, environ=environ)
        manager = PluginManager()
        manager.load(config, cli=plugins, environ=environ)
        return cls(manager)

    @property
    def config(self) -> Config:
        """The configuration the plugins were loaded with (file and environment)."""
        return self.manager.config

    def active(self) -> list[str]:
        """The names of the plugins that are loaded and started."""
        return self.manager.active_names()

    def installed(self) -> list[PluginInfo]:
        """Every installed plugin, active or not, and why."""
        return self.manager.plugins()

    # -- lifecycle ------------------------------------------------------------------

    def start(
        self,
        *,
        model: Model,
        cache: KlineCache,
        clock: Clock,
        base_timeframe: str,
        workers: int,
        confirm_timeframes: Sequence[str] = (),
    ) -> HostServices:
        """Hand the plugins the trader's services (``on_start``).

        :param model: the model as the trader calls it (a :class:`ModelAdapter`, say).
        :param cache: the kline cache the trader reads through.
        :param clock: the trader's clock (:class:`WallClock` for a live trader).
        :param base_timeframe: the timeframe every scan reads.
        :param workers: the worker threads that analyze symbols.
        :param confirm_timeframes: higher timeframes read to confirm a signal.
        :raises ConfigError: a plugin refused its configuration section; the plugins
            started before it are closed first, so nothing of theirs is left running.
        """
        services = HostServices(
            model=model,
            cache=cache,
            clock=clock,
            base_timeframe=base_timeframe,
            workers=workers,
            confirm_timeframes=tuple(confirm_timeframes),
        )
        self._services = services
        self._announced_until = clock.now()
        try:
            self.manager.start(services)
        except BaseException:
            self.close()
            raise
        self.hook = self.manager.fixed_hooks()
        return services

    @property
    def services(self) -> HostServices:
        """What :meth:`start` handed the plugins; ``RuntimeError`` before it."""
        if self._services is None:
            raise RuntimeError("Plugins.start() has not been called")
        return self._services

    def close(self, bound: float | None = None) -> None:
        """Stop the plugins (``on_shutdown``); once, however often it is called.

        :param bound: wait for each plugin's ``on_shutdown`` at most this long (seconds),
            if shorter than the manager's ``hook_timeout_s``.
        """
        if not self._closed:
            self._closed = True
            self.manager.shutdown(bound)

    def __enter__(self) -> Plugins:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the main loop --------------------------------------------------------------

    def candle_closes(self, next_scan_time: float | None = None) -> list[tuple[str, float]]:
        """Announce every candle that closed since the last call (``on_candle_close``).

        Covers the base timeframe and each confirmation timeframe, every close in
        ``(previous call or start, clock now]``. Call it between scans: it is the
        plugins' idle time.

        :param next_scan_time: when the next scan is due (default: now).
        :return: the ``(timeframe, close_time)`` pairs announced, oldest timeframe first.
        """
        services = self.services
        after, now = self._announced_until, services.clock.now()
        self._announced_until = max(after, now)
        next_scan = now if next_scan_time is None else next_scan_time
        announced = []
        for timeframe in (services.base_timeframe, *services.confirm_timeframes):
            for close in closes_between(timeframe, after, now):
                self.hook.on_candle_close(
                    timeframe=timeframe, close_time=close, next_scan_time=next_scan
                )
                announced.append((timeframe, close))
        return announced

    def scan(
        self, symbols: Sequence[str], timeframe: str | None = None
    ) -> AbstractContextManager[None]:
        """``with plugins.scan(symbols):`` around one scan of ``symbols``.

        ``before_scan`` on entry; ``on_scan_complete`` when the block ends without an
        exception. ``timeframe`` defaults to the base timeframe.
        """
        services = self.services
        return _Scan(self.hook, services.clock, symbols, timeframe or services.base_timeframe)

    def signal(self, signal: Signal) -> None:
        """Announce a confirmed signal (``on_signal``), before its order is placed."""
        self.hook.on_signal(signal=signal)

    def metrics(self) -> dict[str, float]:
        """Every plugin's counters, named ``<plugin>.<metric>``."""
        return self.manager.metrics()

    def summaries(self) -> dict[str, str]:
        """What each plugin bought this run, in one line, by plugin name
        (``report_summary``): for the trader's own report."""
        return self.manager.summaries()

    def faults(self) -> dict[str, int]:
        """Faults of plugins so far, as ``{"plugin.hook": count}``."""
        return self.manager.faults()

    # -- the exchange ---------------------------------------------------------------

    def fetching(self, fetch: Fetch) -> Fetch:
        """``fetch`` as the plugins may serve, pace and publish it; put your cache in
        front of what this returns::

            cache = SingleFlightCache(plugins.fetching(exchange.fetch_klines), clock, 360)

        Each call of the returned function calls the exchange hooks in the order
        :mod:`sltrader_plugins.hookspecs` states: ``before_fetch_klines``, then
        ``serve_klines`` (a plugin's series is returned if it is one the exchange could
        have answered now, else that plugin's fault is counted); otherwise the request as
        :meth:`exchange_request` makes it (``fetch`` itself inside), then
        ``after_fetch_klines`` with its answer (``None`` when it raised, and what it
        raised reaches the caller as without plugins). Call it only after :meth:`start`.

        :param fetch: ``fetch(symbol, timeframe, limit) -> Klines``, the exchange's.
        """

        def fetch_klines(symbol: str, timeframe: str, limit: int) -> Klines:
            close_time = last_close_time(timeframe, self.services.clock.now())
            asked = KlineFetch(symbol, timeframe, limit, close_time)
            self.hook.before_fetch_klines(fetch=asked)
            served = self.hook.serve_klines(fetch=asked)
            if served is not None:
                reason = served_fault(served.value, symbol, timeframe, limit, close_time)
                if reason is None:
                    return served.value
                self.manager.fault(served.plugin, "serve_klines", reason)
            klines = None
            try:
                with self._request(ExchangeRequest(1, asked)):
                    klines = fetch(symbol, timeframe, limit)
                return klines
            finally:
                # Plugins see closed candles only: an exchange answers with the forming
                # one (the cache drops and counts it), and a plugin that shared it would
                # hand it to other traders as closed at the next close.
                if isinstance(klines, Klines):
                    klines = klines.closed_at(self.services.clock.now())
                self.hook.after_fetch_klines(fetch=asked, klines=klines)

        return fetch_klines

    def exchange_request(self, weight: int = 1) -> AbstractContextManager[None]:
        """``with plugins.exchange_request():`` around any exchange request of yours that
        is not a kline fetch through :meth:`fetching`.

        On entry ``before_exchange_request`` (this thread now waits on the exchange), then
        ``pace_exchange_request`` (a plugin may hold it back); on exit, whatever happens
        inside, ``after_exchange_request``.

        :param weight: the request's cost in the exchange's rate-limit units.
        """
        return self._request(ExchangeRequest(weight))

    def _request(self, request: ExchangeRequest) -> _Request:
        return _Request(self.hook, request)

    # -- worker threads -------------------------------------------------------------

    def analyzing(self, symbol: str, timeframe: str | None = None) -> AbstractContextManager[None]:
        """``with plugins.analyzing(symbol):`` around one symbol's analysis, in its worker.

        ``before_analyze_symbol`` on entry, ``after_analyze_symbol`` on exit, whatever
        happens inside.
        """
        return _Analyzing(self.hook, symbol, timeframe or self.services.base_timeframe)

    def build_features(
        self,
        symbol: str,
        timeframe: str,
        n_candles: int,
        compute: Callable[..., np.ndarray],
        *args: Any,
        data_errors: tuple[type[Exception], ...] = (),
    ) -> np.ndarray:
        """``compute(*args, buffers)``, with buffers a plugin's (``on_feature_build``) or
        :class:`NumpyBuffers`; released when it ends, also on error.

        ``compute`` takes every temporary array from ``buffers.empty(n)`` and returns
        features of its own (not a buffer). When it raises with a plugin's buffers, it
        runs again with :class:`NumpyBuffers`: if that succeeds, the buffers were at
        fault (counted and logged once, as the plugin's) and the trader gets the same
        features as without the plugin; if it raises too, the error is the data's and
        reaches the caller. Exceptions in ``data_errors`` are the data's at once.
        """
        buffers = self.hook.on_feature_build(
            symbol=symbol, timeframe=timeframe, n_candles=n_candles
        )
        if buffers is None:
            return compute(*args, DEFAULT_BUFFERS)
        try:
            return compute(*args, buffers)
        except data_errors:
            raise
        except Exception as exc:
            features = compute(*args, DEFAULT_BUFFERS)
            reason = f"a build failed with its buffers ({type(exc).__name__}: {exc}), not without"
            self.manager.fault(buffers.plugin, "on_feature_build", reason)
            return features
        finally:
            buffers.release()

    def predict(self, symbol: str, features: np.ndarray, model: Model | None = None) -> float:
        """The prediction for ``features``: a plugin's (``before_predict``) or the model's.

        :param model: default: the model given to :meth:`start`.
        :raises Exception: what ``model.predict`` raises, as without plugins.
        """
        model = self.services.model if model is None else model
        answer: Prediction | None = self.hook.before_predict(
            symbol=symbol, features=features, model=model
        )
        if answer is None:
            return float(model.predict(features))
        value = float(answer)  # finite: the manager checked that much
        bounds = getattr(model, "prediction_range", None)
        if bounds is None or bounds[0] <= value <= bounds[1]:
            return value
        reason = f"answered {value!r}, outside the model's range {list(bounds)}"
        self.manager.fault(answer.plugin, "before_predict", reason)
        return float(model.predict(features))


class _Scan:
    __slots__ = ("_clock", "_hook", "_symbols", "_timeframe")

    def __init__(self, hook: Any, clock: Clock, symbols: Sequence[str], timeframe: str) -> None:
        self._hook, self._clock = hook, clock
        self._symbols, self._timeframe = symbols, timeframe

    def __enter__(self) -> None:
        self._hook.before_scan(
            symbols=self._symbols, timeframe=self._timeframe, now=self._clock.now()
        )

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self._hook.on_scan_complete(
                symbols=self._symbols, timeframe=self._timeframe, now=self._clock.now()
            )


class _Request:
    __slots__ = ("_hook", "_request")

    def __init__(self, hook: Any, request: ExchangeRequest) -> None:
        self._hook, self._request = hook, request

    def __enter__(self) -> ExchangeRequest:
        self._hook.before_exchange_request(request=self._request)
        try:
            self._hook.pace_exchange_request(request=self._request)
        except BaseException:  # after_ is promised for every before_, Ctrl-C included
            self._hook.after_exchange_request(request=self._request)
            raise
        return self._request

    def __exit__(self, *exc: object) -> None:
        self._hook.after_exchange_request(request=self._request)


class _Analyzing:
    __slots__ = ("_hook", "_symbol", "_timeframe")

    def __init__(self, hook: Any, symbol: str, timeframe: str) -> None:
        self._hook, self._symbol, self._timeframe = hook, symbol, timeframe

    def __enter__(self) -> None:
        self._hook.before_analyze_symbol(symbol=self._symbol, timeframe=self._timeframe)

    def __exit__(self, *exc: object) -> None:
        self._hook.after_analyze_symbol(symbol=self._symbol, timeframe=self._timeframe)
