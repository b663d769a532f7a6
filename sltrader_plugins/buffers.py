"""Feature buffers: the default ones, and the plugin's as the trader receives them.

:class:`NumpyBuffers` is what a build uses when no plugin supplies buffers. A plugin's
buffers reach the trader inside :class:`LentBuffers`, which the plugin manager puts
around whatever ``on_feature_build`` returns: it names the plugin, so that
:meth:`sltrader_plugins.Plugins.build_features` can blame it when a build fails with its
buffers and succeeds without them, and it guards ``release``. Each request is checked for
what would change the features silently instead of failing the build: an array of another
shape or dtype (numpy would cast into a ``float32`` one), or one already handed out in this
build (two temporaries in one array). A pool that hands one array to two concurrent builds,
or overlapping views of one block, is not caught here: the plugin's tests must.
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


class WrongBuffer(Exception):
    """A plugin's buffer that would change the features: the build is redone without it."""


class LentBuffers:
    """One build's buffers from plugin ``plugin``.

    ``empty`` checks what the plugin hands out (:class:`WrongBuffer` fails the build,
    which the call site redoes with :class:`NumpyBuffers`); ``release`` reports an
    exception as the plugin's fault instead of raising it.
    """

    __slots__ = ("_empty", "_fault", "_handed", "_inner", "plugin")

    def __init__(self, inner: Any, plugin: str, fault: FaultReporter) -> None:
        self._inner = inner
        self._fault = fault
        self._empty: Callable[..., np.ndarray] = inner.empty
        self._handed: set[int] = set()  # ids of this build's arrays, all alive until release
        self.plugin = plugin

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        array = self._empty(n, dtype)
        if type(array) is not np.ndarray or array.shape != (n,) or array.dtype != dtype:
            raise WrongBuffer(f"asked for {n} x {np.dtype(dtype)}, got {array!r:.80}")
        handed = self._handed
        if id(array) in handed:
            raise WrongBuffer("handed out one array twice in one build")
        handed.add(id(array))
        return array

    def release(self) -> None:
        self._handed.clear()
        try:
            self._inner.release()
        except Exception as exc:
            self._fault(self.plugin, "on_feature_build", f"release() raised {exc!r}")
