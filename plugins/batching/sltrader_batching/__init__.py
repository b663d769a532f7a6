"""sltrader-batching: Micro-batched ML inference for threaded callers."""

__version__ = "0.1.0"
