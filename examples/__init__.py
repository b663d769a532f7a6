"""Examples of traders that use sltrader's plugins through the public surface only."""
