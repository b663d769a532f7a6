"""sltrader-pooling: pooled intermediate buffers for feature builds.

The plugin (:class:`~sltrader_pooling.plugin.PoolingPlugin`) answers the host's
``on_feature_build`` hook with a pooled ``FeatureBuffers``; :class:`BufferPool` is usable
on its own: numpy buffers lent per build, from one bounded, thread-safe pool.
"""

from sltrader_pooling.buffers import BufferPool, BufferStats, BuildBuffers, PoolError
from sltrader_pooling.config import PoolingConfig
from sltrader_pooling.plugin import PoolingPlugin

__version__ = "0.1.0"

__all__ = [
    "BufferPool",
    "BufferStats",
    "BuildBuffers",
    "PoolError",
    "PoolingConfig",
    "PoolingPlugin",
    "__version__",
]
