"""Feature buffers: the default ones, and the plugin's as the trader receives them.

:class:`NumpyBuffers` is what a build uses when no plugin supplies buffers. A plugin's
buffers reach the trader inside :class:`LentBuffers`, which the plugin manager puts
around whatever ``on_feature_build`` returns: it names the plugin, so that
:meth:`sltrader_plugins.Plugins.build_features` can blame it when a build fails with its
buffers and succeeds without them, and it guards ``release``. Requests go straight to the
plugin: a check per request would cost more than pooling saves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class NumpyBuffers:
    """The default buffers: a fresh ``np.empty`` per request; nothing to release."""

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        return np.empty(n, dtype=dtype)

    def release(self) -> None:
        return None


DEFAULT_BUFFERS = NumpyBuffers()

#: ``fault(plugin, hook, reason)``: how a guard reports a plugin's fault to its owner.
FaultReporter = Callable[[str, str, str], None]


class LentBuffers:
    """One build's buffers from plugin ``plugin``.

    ``empty`` is the plugin's own bound method; ``release`` reports an exception as the
    plugin's fault instead of raising it.
    """

    __slots__ = ("_fault", "_inner", "empty", "plugin")

    def __init__(self, inner: Any, plugin: str, fault: FaultReporter) -> None:
        self._inner = inner
        self._fault = fault
        self.empty: Callable[..., np.ndarray] = inner.empty
        self.plugin = plugin

    def release(self) -> None:
        try:
            self._inner.release()
        except Exception as exc:
            self._fault(self.plugin, "on_feature_build", f"release() raised {exc!r}")
