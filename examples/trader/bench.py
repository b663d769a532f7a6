"""The example trader as ``sltrader bench --trader`` runs it, from the repository's root::

    sltrader bench --trader examples.trader.bench:cycles --cycles 120 --repeats 3
    sltrader bench --trader examples.trader.bench:cycles --cycles 120 --workers 1,3,8

Its decisions are its signals (with the paper order each places); its predictions agree
across plugin sets to 1e-9, not to the bit, and are compared by examples/tests instead.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from examples.trader.main import WORKERS, run, use_workers


def cycles(count: int, workers: int = WORKERS) -> list[dict[str, Any]]:
    """Replay ``count`` hourly candles on ``workers`` threads with the plugins
    ``Plugins.load()`` chooses."""
    use_workers(workers)
    with tempfile.TemporaryDirectory(prefix="example-trader-") as tmp:
        out = Path(tmp) / "run.jsonl"
        run(argparse.Namespace(plugins=None, cycles=count, out=out))
        lines = [json.loads(line) for line in out.read_text().splitlines()]
    return [line for line in lines if line["kind"] == "signal"]
