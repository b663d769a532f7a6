"""sltrader-plugins: the hook contract of a synchronous, thread-based trading bot.

A plugin marks its hook implementations with :data:`hookimpl`::

    from sltrader_plugins import hookimpl

    class MyPlugin:
        @hookimpl
        def on_scan_complete(self, symbols, timeframe, now): ...
"""

from __future__ import annotations

import pluggy

from sltrader_plugins.config import Config, ConfigError, section_from
from sltrader_plugins.hookspecs import PROJECT_NAME
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
from sltrader_plugins.timeframes import (
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
    "Clock",
    "Config",
    "ConfigError",
    "FeatureBuffers",
    "HostServices",
    "KlineCache",
    "Model",
    "Signal",
    "__version__",
    "closes_between",
    "hookimpl",
    "last_close_time",
    "next_close_time",
    "section_from",
    "timeframe_seconds",
]
