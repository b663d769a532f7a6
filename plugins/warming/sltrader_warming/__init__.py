"""sltrader-warming: On-demand kline cache warmer."""

__version__ = "0.1.0"
