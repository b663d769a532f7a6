"""The reference host: a small, real, synchronous and thread-based trader.

Modules are named after what they hold: ``exchange`` (the replay exchange and its
simulated clock), ``features`` (``FeatureEngine``),
``model`` (the self-learning model), ``analyzer`` (``ParallelAnalyzer``), ``trading``
(``TradingService``), ``loop`` (the main loop), ``workload`` (the reference workload),
``report``, ``commands`` (``sltrader run`` and ``sltrader bench``) and ``bench``.

Importing this package does not import scikit-learn; ``model`` does, lazily.
"""
