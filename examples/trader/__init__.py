"""A small third-party trader in the requirement's shape, on real market data.

``exchange`` (a replay over real candles), ``cache`` (its ``IntelligentCache``),
``features`` (``FeatureEngine``), ``model`` (training), ``analyzer``
(``ParallelAnalyzer``), ``trading`` (``TradingService``) and ``main`` (the loop). It uses
``sltrader_plugins``' public surface only, never the reference host. See README.md.
"""
