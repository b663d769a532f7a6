"""Feature buffers: the default ones, and the plugin's as the trader receives them.

:class:`NumpyBuffers` is what a build uses when no plugin supplies buffers. A plugin's
buffers reach the trader inside :class:`LentBuffers`, which the plugin manager puts
around whatever ``on_feature_build`` returns: it names the plugin, so that
:meth:`sltrader_plugins.Plugins.build_features` can blame it when a build fails with its
buffers and succeeds without them, and it guards ``release``. Each request's dtype is
checked, by identity so that the check allocates nothing (pooling exists to save
allocations). What would cost an allocation per request is not checked here: one array
handed out twice, or to two concurrent builds (the plugin's own tests must catch that).
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


#: The dtypes a build asks for, each mapped to numpy's one instance of it: an identity test
#: against it allocates nothing, where ``array.dtype != dtype`` would convert each time.
_DTYPES = {t: np.dtype(t) for t in (np.float64, np.int64, np.bool_, np.float32, np.int32)}


class LentBuffers:
    """One build's buffers from plugin ``plugin``.

    ``empty`` checks the dtype of what the plugin hands out (:class:`WrongBuffer` fails
    the build, which the call site redoes with :class:`NumpyBuffers`): numpy casts into an
    ``out=`` array of a narrower dtype without a word. A wrong length numpy refuses by
    itself. ``release`` reports an exception as the plugin's fault instead of raising it.
    """

    __slots__ = ("_empty", "_fault", "_inner", "plugin")

    def __init__(self, inner: Any, plugin: str, fault: FaultReporter) -> None:
        self._inner = inner
        self._fault = fault
        self._empty: Callable[..., np.ndarray] = inner.empty
        self.plugin = plugin

    def empty(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        array = self._empty(n, dtype)
        want = _DTYPES.get(dtype)
        if want is None:
            want = np.dtype(dtype)
        if getattr(array, "dtype", None) is not want or type(array) is not np.ndarray:
            raise WrongBuffer(f"asked for {n} x {want}, got {array!r:.80}")
        return array

    def release(self) -> None:
        try:
            self._inner.release()
        except Exception as exc:
            self._fault(self.plugin, "on_feature_build", f"release() raised {exc!r}")
