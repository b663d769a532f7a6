"""One bench run in a fresh process: ``python -m sltrader_plugins.host.bench_worker``.

Runs the reference trader once with exactly the plugins of ``--plugins`` and writes the
report (with allocation figures and the process's peak RSS) as JSON, and every
prediction keyed by ``(cycle, symbol)`` to ``--predictions``. With ``--exchange URL`` it
trades on a served exchange; ``--trader I`` makes it trader ``I`` of several
(``Workload.trader``); ``--start-at T --speed X`` starts cycle ``k`` at wall time
``T + k x scan_interval / X`` at the earliest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sltrader_plugins.host.arguments import workload_for, workload_options
from sltrader_plugins.host.loop import Host
from sltrader_plugins.host.served import served_exchange
from sltrader_plugins.options import add_plugin_options, load_manager


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sltrader_plugins.host.bench_worker")
    add_plugin_options(parser)
    workload_options(parser, "small")  # as the bench: its --size, else the file's, else small
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, default=None)
    parser.add_argument("--exchange", metavar="URL", default=None)
    parser.add_argument("--trader", type=int, default=0)
    parser.add_argument("--no-allocations", action="store_true")
    parser.add_argument("--start-at", type=float, default=None, help="wall time of cycle 0")
    parser.add_argument(
        "--speed", type=float, default=None, help="simulated seconds per real second"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config, workload = workload_for(args)
    workload = workload.trader(args.trader)
    manager = load_manager(args, config)
    with contextlib.ExitStack() as stack:
        predictions = None
        if args.predictions is not None:
            predictions = stack.enter_context(args.predictions.open("w", encoding="utf-8"))
        host = Host(
            workload,
            manager,
            predictions=predictions,
            wrap_exchange=served_exchange(args.exchange),
        )
        progress = None
        if args.start_at is not None and args.speed:
            progress = _schedule(args.start_at, workload.scan_interval_s / args.speed)
            progress(0, workload.cycles, 0.0)
        report = host.run(progress=progress, allocations=not args.no_allocations)
    args.out.write_text(json.dumps(report.as_dict(), sort_keys=True), encoding="utf-8")
    return 0


def _schedule(start_at: float, interval_s: float) -> Callable[[int, int, float], None]:
    """A ``progress`` callback that holds cycle ``k`` until ``start_at + k x interval_s``
    (wall time): traders started together scan together, as real ones do on one clock;
    one that falls behind (a slow scan, a rate limit) catches up without waiting."""

    def wait(done: int, _total: int, _scan_s: float) -> None:
        delay = start_at + done * interval_s - time.time()
        if delay > 0:
            time.sleep(delay)

    return wait


if __name__ == "__main__":
    sys.exit(main())
