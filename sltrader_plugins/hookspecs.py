"""The hooks a trader calls and a plugin may implement.

Every hook is called with keyword arguments. A plugin implements a hook by defining a
function or method of the same name, marked with :data:`sltrader_plugins.hookimpl`; it
may accept any subset of the arguments below. An exception raised by a plugin's hook, or
a return value of the wrong kind, is logged once (with the plugin's name), counted, and
treated as if the plugin had returned ``None``: the host falls back to its own behaviour
and the other plugins still run.

Each hook means one thing. A hook either *observes* (every implementation is called, its
return value ignored) or *answers* (``firstresult``: ``serve_klines``, ``on_feature_build``,
``before_predict``; the first answer the host accepts ends the call). To observe what an
answer hook is about, implement it with ``@hookimpl(tryfirst=True)`` and return ``None``:
it is then called before any plugin can answer.

Order: within one hook the manager calls the plugins by their entry-point names in
alphabetical order, ``tryfirst`` implementations before the others (``trylast`` and hook
wrappers are refused); the order of the hooks themselves is the call sites' and stated
with each hook (the exchange's below). Neither depends on the order of installation.

Threading: ``before_analyze_symbol``, ``after_analyze_symbol``, ``before_predict`` and
``on_feature_build`` are called from worker threads, many at once; the exchange hooks
(:data:`WORKER_HOOKS` lists them all) from whichever thread talks to the exchange. Every
other hook is called for the host's main loop, on a thread the manager keeps for the
plugin: one plugin's main-loop hooks run one at a time, and the loop waits for each call
at most ``hook_timeout_s`` (a call that overruns is abandoned and counted as a fault; the
plugin's main-loop calls are skipped until it returns). An implementation marked
:func:`sltrader_plugins.nonblocking` runs in the main loop itself, unbounded; one marked
:func:`sltrader_plugins.nonblocking_while` does so while its test says it has nothing to wait for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pluggy

from sltrader_plugins.config import PluginSettings
from sltrader_plugins.exchange_requests import ExchangeRequest, KlineFetch
from sltrader_plugins.klines import Klines
from sltrader_plugins.protocols import FeatureBuffers, HostServices, Model
from sltrader_plugins.signals import Signal

PROJECT_NAME = "sltrader"

#: The longest line ``report_summary`` may return.
SUMMARY_MAX_CHARS = 200

#: Hooks called from worker threads (or any thread), many at once, and never bounded by
#: the manager: they are on the hot path and each plugin bounds its own work. The others
#: are the main loop's: the manager waits for each plugin's call at most ``hook_timeout_s``.
WORKER_HOOKS = frozenset(
    {
        "before_analyze_symbol",
        "after_analyze_symbol",
        "on_feature_build",
        "before_predict",
        "before_fetch_klines",
        "serve_klines",
        "after_fetch_klines",
        "before_exchange_request",
        "pace_exchange_request",
        "after_exchange_request",
    }
)

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# -- lifecycle ------------------------------------------------------------------------


@hookspec
def on_start(services: HostServices, settings: PluginSettings) -> None:
    """The host has built its services and registered every plugin; no worker runs yet.

    A plugin validates its own settings here (``settings.parse(MyConfig)``) and builds
    its state. Called once per host, for each plugin with its own ``settings``. Raising
    :class:`sltrader_plugins.ConfigError` stops start-up (a wrong setting is the user's
    to fix); any other exception unregisters the plugin.

    :param services: the model, cache, clock and timeframes of the host.
    :param settings: this plugin's name and configuration section.
    """


@hookspec
def on_shutdown() -> None:
    """The host is stopping; no worker thread will call a hook again.

    A plugin answers what it still holds (pending requests), stops its threads and
    reports leaks here. Called once, also when the loop ended with an error.
    """


# -- one scan -------------------------------------------------------------------------


@hookspec
def before_scan(symbols: Sequence[str], timeframe: str, now: float) -> None:
    """A scan cycle is about to analyze ``symbols``.

    :param symbols: the symbols of this cycle's universe, in scan order.
    :param timeframe: the base timeframe of the scan.
    :param now: the clock's now at the start of the scan (epoch seconds).
    """


@hookspec
def before_analyze_symbol(symbol: str, timeframe: str) -> None:
    """A worker thread starts analyzing ``symbol`` (called in that thread).

    Every call is followed by exactly one ``after_analyze_symbol`` for the same symbol
    in the same thread, whatever happens in between.

    :param symbol: the symbol about to be analyzed.
    :param timeframe: the base timeframe of the scan.
    """


@hookspec
def after_analyze_symbol(symbol: str, timeframe: str) -> None:
    """A worker thread finished analyzing ``symbol``, successfully or not.

    After this call the thread will not call ``before_predict`` for ``symbol`` again in
    this scan.

    :param symbol: the symbol that was analyzed.
    :param timeframe: the base timeframe of the scan.
    """


@hookspec(firstresult=True)
def on_feature_build(symbol: str, timeframe: str, n_candles: int) -> FeatureBuffers | None:
    """The host is about to build the features of one series; supply its buffers.

    The host's feature code asks the returned object for every intermediate array of this
    build and calls its ``release`` exactly once when the build ends, also when it raises.
    The maths is the host's alone, so features are bit-identical whatever this returns.

    :param symbol: the symbol whose klines are being turned into features.
    :param timeframe: the timeframe of the klines.
    :param n_candles: the number of candles in the series (the length of most buffers).
    :return: the buffers for this build, or ``None`` to let the host allocate its own.
        The first non-``None`` result wins. The host sees it through a guard: a request
        that raises or answers the wrong shape or dtype, or a ``release`` that raises,
        counts as this plugin's fault and the build goes on with ``np.empty``.
    """


@hookspec(firstresult=True)
def before_predict(symbol: str, features: np.ndarray, model: Model) -> float | None:
    """A worker thread is about to call ``model.predict(features)``.

    The features array is the caller's own and is not modified afterwards; a plugin may
    read it until it returns. The call blocks the worker until it returns.

    :param symbol: the symbol the features belong to.
    :param features: the feature vector (1-D float64).
    :param model: the model the host would call.
    :return: the prediction ``model.predict(features)`` would give (to 1e-9), or ``None``
        to let the host call ``model.predict`` itself. The first non-``None`` result wins.
        An answer the model could not have given is this plugin's fault (logged once,
        counted) and the host predicts: one that is not a finite number, or one outside
        the model's ``prediction_range`` when the model declares one (``ModelAdapter``
        over ``predict_proba`` answers in ``[0, 1]``). A wrong value inside the range
        cannot be told from a right one without calling the model: that is what the
        plugin promises. When the model fails, or answers something that is not a
        finite number, return ``None`` rather than raise or pass it on: the host's own
        call then meets it in this thread as without plugins.
    """


@hookspec
def on_scan_complete(symbols: Sequence[str], timeframe: str, now: float) -> None:
    """``analyze_all_symbols`` has returned for one cycle.

    :param symbols: the symbols that were scanned (every one was read on ``timeframe``).
    :param timeframe: the base timeframe of the scan.
    :param now: the clock's now after the scan (epoch seconds).
    """


@hookspec
def on_signal(signal: Signal) -> None:
    """The host emitted a confirmed trading signal (before it places the order).

    :param signal: the signal; ``signal.timeframe`` is the base timeframe it was scanned
        on, and the higher timeframes that confirmed it are ``services.confirm_timeframes``.
    """


@hookspec
def on_candle_close(timeframe: str, close_time: float, next_scan_time: float) -> None:
    """Between scans, the host's clock has passed the close of a candle of ``timeframe``.

    This is the host's idle time: what a plugin does here is not part of a scan. Called
    from the main loop before the next scan starts, once per close and timeframe, for the
    base timeframe and each of ``services.confirm_timeframes``.

    :param timeframe: the timeframe whose candle closed.
    :param close_time: the close time of that candle (epoch seconds, ``<= now``).
    :param next_scan_time: when the next scan is due (epoch seconds, clock time).
    """


# -- the exchange ---------------------------------------------------------------------
# The host's kline fetch, as ``Plugins.fetching`` wraps it, in this order:
#   before_fetch_klines(fetch)          every fetch, observers only
#   serve_klines(fetch)                 a plugin may answer; if one does, the fetch ends here
#   before_exchange_request(request)    the thread is about to wait on the exchange
#   pace_exchange_request(request)      a plugin may hold the request back (its budget)
#   ... the exchange call ...
#   after_exchange_request(request)     the thread is back, the request returned or raised
#   after_fetch_klines(fetch, klines)   what the exchange answered (None: it failed)
# Every other exchange request of the trader (``with plugins.exchange_request():``) gets
# the three ``*_exchange_request`` hooks with ``request.fetch`` ``None``. A cache in front
# of the wrapped fetch (``SingleFlightCache``) makes one fetch per stale series.


@hookspec
def before_fetch_klines(fetch: KlineFetch) -> None:
    """The trader is about to fetch ``fetch.symbol`` on ``fetch.timeframe``.

    Called for every fetch, in the thread that needs the series (a worker, a prefetch,
    the main loop), before any plugin may serve it: an observer sees every fetch here.

    :param fetch: what is asked; the same object reaches ``serve_klines`` and
        ``after_fetch_klines`` of this fetch (match them by identity).
    """


@hookspec(firstresult=True)
def serve_klines(fetch: KlineFetch) -> Klines | None:
    """Serve the series of ``fetch`` instead of the exchange.

    A plugin may wait here for a fetch made elsewhere (another process's), and must bound
    that wait itself: the manager does not.

    :param fetch: what is asked, ``fetch.close_time`` the close of the newest candle
        closed by the trader's clock (a series is fresh if it reaches it).
    :return: what the exchange would answer now (the newest ``fetch.limit`` candles
        closed by ``fetch.close_time``), or ``None`` to let the trader fetch. The first
        non-``None`` result wins. One of another symbol or timeframe, longer than
        ``limit``, or whose newest candle does not close exactly at ``close_time`` (later:
        not closed yet; earlier: stale) is this plugin's fault, and the trader fetches.
    """


@hookspec
def after_fetch_klines(fetch: KlineFetch, klines: Klines | None) -> None:
    """The exchange answered ``fetch`` (``klines``), or failed to (``None``).

    Called once for every fetch that no plugin served, in the same thread, after
    ``after_exchange_request``, also when the request raised. A plugin publishes the
    series here, or releases what it reserved in ``serve_klines`` for this ``fetch``
    (when a plugin called after it serves the fetch, this never comes: bound in time what
    ``serve_klines`` reserves).

    :param fetch: the object ``before_fetch_klines`` and ``serve_klines`` were given.
    :param klines: what the exchange answered (read-only arrays), without a candle that
        has not closed by the trader's clock; ``None`` on failure.
    """


@hookspec
def before_exchange_request(request: ExchangeRequest) -> None:
    """This thread is about to wait on the exchange: pacing, then the request.

    Called before ``pace_exchange_request``, for every request (kline fetches, prefetches
    included, and the trader's others), from any thread. Always followed by exactly one
    ``after_exchange_request`` with the same ``request``, in the same thread.

    :param request: this request; ``request.fetch`` is the kline fetch it is for, if any.
    """


@hookspec
def pace_exchange_request(request: ExchangeRequest) -> None:
    """Return when ``request`` may go: a plugin that keeps a request budget blocks here.

    Called after ``before_exchange_request`` and right before the request is sent. The
    plugin bounds its own wait: the manager does not.

    :param request: this request; ``request.weight`` is its cost in the exchange's
        rate-limit units (1 for most).
    """


@hookspec
def after_exchange_request(request: ExchangeRequest) -> None:
    """The request of ``before_exchange_request`` returned or raised; this thread is back.

    :param request: the object ``before_exchange_request`` was given.
    """


# -- reporting ------------------------------------------------------------------------


@hookspec
def report_metrics() -> Mapping[str, float] | None:
    """The host is writing its report; return this plugin's counters.

    Called from the main loop after the last scan (and by benchmarks between runs).

    :return: finite numbers by metric name (``{"batches": 12}``), or ``None``. The
        manager prefixes each name with the plugin's entry-point name and a dot
        (``"batching.batches"``). Anything else is this plugin's fault. The order is
        kept: the first entries are the ones a user needs first (what the plugin saved),
        and reports list them at the top of the plugin's counters.
    """


@hookspec
def report_summary() -> str | None:
    """The host is writing its report; return one line saying what this plugin bought
    this run.

    Called from the main loop after the last scan, as :func:`report_metrics` is. Say it
    in a user's terms, from the plugin's counters ("8.2 predictions per model call",
    "stepped aside: no other trader on its Redis"), without the plugin's name: the report
    puts it first.

    :return: one line of at most :data:`SUMMARY_MAX_CHARS` characters, or ``None``.
        Anything else is this plugin's fault.
    """
