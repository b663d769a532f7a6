"""``python -m examples.stock_trader``: one run, and a short summary of it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from examples.stock_trader.exchange import MAX_CYCLES

ENV_PLUGINS = "SLTRADER_PLUGINS"  # what Plugins.load() reads (docs/plugins.md)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.stock_trader", description=__doc__)
    parser.add_argument("--plugins", help=f'plugins for this run ({ENV_PLUGINS}); "" for none')
    parser.add_argument("--plain", action="store_true", help="run plain.py, the plugin-free bot")
    parser.add_argument("--cycles", type=int, default=40, help=f"days, 1 to {MAX_CYCLES}")
    parser.add_argument("--workers", type=int, default=4, help="threads, 1 to 16")
    parser.add_argument("--out", type=Path, help="write decisions, analyses, summary (JSON)")
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= MAX_CYCLES:
        parser.error(f"--cycles: 1 to {MAX_CYCLES} (the replayed days)")
    if not 1 <= args.workers <= 16:
        parser.error("--workers: 1 to 16")
    if args.plain and args.plugins:
        parser.error("--plain runs without plugins")
    if args.plugins is not None:
        os.environ[ENV_PLUGINS] = args.plugins  # before bot.py's Plugins.load()
    if args.plain:
        from examples.stock_trader.plain import run
    else:
        from examples.stock_trader.bot import run
    start = time.perf_counter()
    result = run(args.cycles, args.workers)
    wall = time.perf_counter() - start
    kinds = [d["kind"] for d in result.decisions]
    summary = {
        "bot": "plain.py" if args.plain else "bot.py",
        "run": f"{args.cycles} days of {len(result.scans[0])} symbols on {args.workers} "
        f"workers: {wall:.2f} s, model training included",
        "decisions": f"{kinds.count('signal')} signals, {kinds.count('order')} orders",
        **result.summary,
    }
    if args.out is not None:
        scans = [[dataclasses.asdict(a) for a in scan] for scan in result.scans]
        out = {"decisions": result.decisions, "scans": scans, "summary": summary}
        args.out.write_text(json.dumps(out))
    summary.pop("metrics", None)  # every plugin counter: in --out only
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
