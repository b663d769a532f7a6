"""sltrader-pooling: Pooled feature buffers."""

__version__ = "0.1.0"
