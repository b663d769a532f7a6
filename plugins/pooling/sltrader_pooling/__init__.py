"""sltrader-pooling: pooled intermediate buffers for feature builds.

The plugin (:class:`~sltrader_pooling.plugin.PoolingPlugin`) answers the host's
``on_feature_build`` hook with a pooled ``FeatureBuffers``; the building blocks are usable
on their own: :class:`ObjectPool`, a bounded thread-safe pool of any object, and
:class:`BufferPool`, size-classed numpy buffers lent per build.
"""

from sltrader_pooling.buffers import BufferPool, BufferStats, BuildBuffers, size_class
from sltrader_pooling.config import PoolingConfig
from sltrader_pooling.plugin import PoolingPlugin
from sltrader_pooling.pool import ObjectPool, PoolError, PoolStats

__version__ = "0.1.0"

__all__ = [
    "BufferPool",
    "BufferStats",
    "BuildBuffers",
    "ObjectPool",
    "PoolError",
    "PoolStats",
    "PoolingConfig",
    "PoolingPlugin",
    "__version__",
    "size_class",
]
