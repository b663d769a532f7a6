"""One bench run in a fresh process: ``python -m sltrader_plugins.host.bench_worker``.

Runs the reference trader once with exactly the plugins of ``--plugins`` and writes the
report (with allocation figures and the process's peak RSS) as JSON, and every
prediction keyed by ``(cycle, symbol)`` to ``--predictions``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sltrader_plugins.host.arguments import workload_for, workload_options
from sltrader_plugins.host.loop import Host
from sltrader_plugins.options import add_plugin_options, load_manager


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sltrader_plugins.host.bench_worker")
    add_plugin_options(parser)
    workload_options(parser, "small")  # as the bench: its --size, else the file's, else small
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config, workload = workload_for(args)
    manager = load_manager(args, config)
    with args.predictions.open("w", encoding="utf-8") as predictions:
        host = Host(workload, manager, predictions=predictions)
        report = host.run(allocations=True)
    args.out.write_text(json.dumps(report.as_dict(), sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
