"""A stock trader written from the docs alone, on real daily candles; see README.md.

``plain.py`` is the trader without plugins, ``bot.py`` the same trader with them; both
import the shared ``data``, ``exchange``, ``features``, ``model`` and ``trading``
modules, so they differ only by the integration. ``bench.py`` is bot.py as
``sltrader bench --trader`` runs it.
"""
