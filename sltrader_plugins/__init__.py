"""sltrader-plugins: the hook contract of a synchronous, thread-based trading bot.

A trader calls its plugins through :class:`Plugins` (or the manager's ``hook`` relay) and
may build on the public pieces here: :class:`Klines`, :class:`SingleFlightCache`,
:class:`ModelAdapter`, :class:`NumpyBuffers`, :class:`WallClock`. A plugin marks its hook
implementations with :data:`hookimpl`::

    from sltrader_plugins import hookimpl

    class MyPlugin:
        @hookimpl
        def on_scan_complete(self, symbols, timeframe, now): ...

Nothing here imports the reference host (``sltrader_plugins.host``) or a model library.
"""

from __future__ import annotations

import pluggy

from sltrader_plugins.bounded import Call, DaemonThreads, Outcome
from sltrader_plugins.buffers import NumpyBuffers
from sltrader_plugins.cache import SingleFlightCache
from sltrader_plugins.callsites import Plugins
from sltrader_plugins.clock import WallClock
from sltrader_plugins.config import (
    Check,
    Config,
    ConfigError,
    PluginSettings,
    SettingError,
    finite,
    integer,
    load_config,
    one_of,
    section_from,
    timeframe,
    timeframe_list,
)
from sltrader_plugins.exchange_requests import ExchangeRequest, KlineFetch
from sltrader_plugins.hookspecs import PROJECT_NAME
from sltrader_plugins.klines import Klines, served_fault
from sltrader_plugins.manager import PluginError, PluginManager
from sltrader_plugins.marks import nonblocking, nonblocking_while
from sltrader_plugins.model import ModelAdapter, ModelTimes, finite_number
from sltrader_plugins.protocols import (
    BatchModel,
    CacheStats,
    Clock,
    FeatureBuffers,
    HostServices,
    KlineCache,
    Model,
)
from sltrader_plugins.signals import Signal
from sltrader_plugins.tally import Tally
from sltrader_plugins.timeframes import (
    close_boundary,
    closes_between,
    last_close_time,
    next_close_time,
    timeframe_seconds,
)

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marker for a plugin's hook implementations."""

__all__ = [
    "BatchModel",
    "CacheStats",
    "Call",
    "Check",
    "Clock",
    "Config",
    "ConfigError",
    "DaemonThreads",
    "ExchangeRequest",
    "FeatureBuffers",
    "HostServices",
    "KlineCache",
    "KlineFetch",
    "Klines",
    "Model",
    "ModelAdapter",
    "ModelTimes",
    "NumpyBuffers",
    "Outcome",
    "PluginError",
    "PluginManager",
    "PluginSettings",
    "Plugins",
    "SettingError",
    "Signal",
    "SingleFlightCache",
    "Tally",
    "WallClock",
    "__version__",
    "close_boundary",
    "closes_between",
    "finite",
    "finite_number",
    "hookimpl",
    "integer",
    "last_close_time",
    "load_config",
    "next_close_time",
    "nonblocking",
    "nonblocking_while",
    "one_of",
    "section_from",
    "served_fault",
    "timeframe",
    "timeframe_list",
    "timeframe_seconds",
]
