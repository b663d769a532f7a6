"""sltrader-shared: series, single flight and request budget shared by traders through Redis."""

__version__ = "0.1.0"
