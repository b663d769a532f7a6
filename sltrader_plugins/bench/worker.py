"""One bench run in a fresh process: ``python -m sltrader_plugins.bench.worker``.

Runs the reference trader once with exactly the plugins of ``--plugins`` and writes the
report (with allocation figures and the process's peak RSS) as JSON, and every
prediction keyed by ``(cycle, symbol)`` to ``--predictions``. With ``--exchange URL`` it
trades on a served exchange; ``--trader I`` makes it trader ``I`` of several
(``Workload.trader``). With ``--speed X`` it runs with others on one schedule: once
its plugins have started it writes ``started`` on stdout and reads the wall time ``T``
of cycle 0 from stdin, then starts cycle ``k`` at ``T + k x scan_interval / X`` at the
earliest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sltrader_plugins.host.arguments import workload_for, workload_options
from sltrader_plugins.host.loop import Host
from sltrader_plugins.options import add_plugin_options, load_manager
from sltrader_plugins.served import served_exchange


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sltrader_plugins.bench.worker")
    add_plugin_options(parser)
    workload_options(parser, "small")  # as the bench: its --size, else the file's, else small
    parser.add_argument("--cycles", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, default=None)
    parser.add_argument("--exchange", metavar="URL", default=None)
    parser.add_argument("--trader", type=int, default=0)
    parser.add_argument("--no-allocations", action="store_true")
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second; cycle 0's wall time from stdin",
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
        schedule = _Schedule(workload.scan_interval_s / args.speed) if args.speed else None
        report = host.run(
            progress=schedule.wait if schedule else None,
            allocations=not args.no_allocations,
            on_started=schedule.start if schedule else None,
        )
    args.out.write_text(json.dumps(report.as_dict(), sort_keys=True), encoding="utf-8")
    return 0


class _Schedule:
    """Holds cycle ``k`` until ``start_at + k x interval_s`` (wall time): traders run
    together scan together, as real ones do on one clock; one that falls behind (a slow
    scan, a rate limit) catches up without waiting. ``start_at`` comes from the bench
    once every trader has started: whichever starts first, none scans before the others
    are there."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.start_at = 0.0

    def start(self) -> None:
        print("started", flush=True)
        line = sys.stdin.readline()
        if not line:
            raise SystemExit("the bench went away before cycle 0")
        self.start_at = float(line)
        self.wait(0, 0, 0.0)

    def wait(self, done: int, _total: int, _scan_s: float) -> None:
        delay = self.start_at + done * self.interval_s - time.time()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    sys.exit(main())
