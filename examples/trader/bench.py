"""The example trader as ``sltrader bench --trader`` runs it, from the repository's root::

    sltrader bench --trader examples.trader.bench:cycles --cycles 120 --repeats 3
    sltrader bench --trader examples.trader.bench:cycles --cycles 120 --workers 1,3,8

Its decisions are its signals, probabilities rounded to 9 digits: a batch call answers
a row in its last bits unlike a call of one row (predictions agree across plugin sets to
1e-9, not to the bit; examples/tests compares them so).
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
    return [
        {**line, "probability": round(line["probability"], 9)}
        for line in lines
        if line["kind"] == "signal"
    ]
