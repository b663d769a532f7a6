"""Feature buffers: the default ones, and the guard around a plugin's.

:class:`NumpyBuffers` is what a build uses when no plugin supplies buffers. A plugin's
buffers reach the trader only inside :class:`GuardedBuffers`, which the plugin manager
puts around whatever ``on_feature_build`` returns: a request that raises or answers an
array of the wrong shape or dtype, or a ``release`` that raises, is that plugin's fault.
It is counted and reported once, and the build goes on with ``np.empty``. Arrays are
written before they are read in a build, so the features are the same either way.
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


class GuardedBuffers:
    """One build's buffers from plugin ``plugin``, checked on every request.

    After the first fault every later request of this build is served by ``np.empty``.
    Used by one build, so by one thread: no lock.
    """

    __slots__ = ("_empty", "_failed", "_fault", "_inner", "plugin")

    def __init__(self, inner: Any, plugin: str, fault: FaultReporter) -> None:
        self._inner = inner
        self._empty = inner.empty
        self._fault = fault
        self._failed = False
        self.plugin = plugin

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        if not self._failed:
            try:
                array = self._empty(n, dtype)
            except Exception as exc:
                self._fail(f"empty({n}, {np.dtype(dtype)}) raised {type(exc).__name__}: {exc}")
            else:
                # len and ndim, not shape: a shape tuple per request would be an allocation
                # on the path a pooling plugin exists to make allocation-free.
                if (
                    type(array) is np.ndarray
                    and array.ndim == 1
                    and len(array) == n
                    and array.dtype == dtype
                ):
                    return array
                self._fail(f"empty({n}, {np.dtype(dtype)}) returned {_describe(array)}")
        return np.empty(n, dtype=dtype)

    def release(self) -> None:
        try:
            self._inner.release()
        except Exception as exc:
            self._fault(self.plugin, "on_feature_build", f"release() raised {exc!r}")

    def _fail(self, reason: str) -> None:
        self._failed = True
        self._fault(self.plugin, "on_feature_build", reason)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"
