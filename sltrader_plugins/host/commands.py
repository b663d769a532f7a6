"""``sltrader run`` and ``sltrader bench``: wired into the CLI by ``add_commands``.

Nothing here imports scikit-learn or the host at import time, so ``sltrader plugins``
and ``--version`` stay light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _workload_options(parser: argparse.ArgumentParser, size: str) -> None:
    parser.add_argument(
        "--size", choices=("small", "full"), default=size, help=f"workload (default: {size})"
    )
    parser.add_argument("--workers", type=int, default=None, help="worker threads")
    parser.add_argument("--model", choices=("sgd", "cheap"), default=None, help="model")
    parser.add_argument("--seed", type=int, default=None, help="market seed")


def add_commands(commands: Any) -> None:
    """Add the ``run`` and ``bench`` subcommands to the CLI's subparsers."""
    from sltrader_plugins.cli import add_plugin_options

    run = commands.add_parser("run", help="run the reference trader with the active plugins")
    add_plugin_options(run)
    _workload_options(run, "full")  # the main job: the headline workload, about 20 s
    run.add_argument("--cycles", type=int, default=None, help="scan cycles to run")
    run.add_argument("--json", metavar="PATH", type=Path, default=None, help="write the report")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser(
        "bench", help="compare plugin sets side by side on the reference workload"
    )
    add_plugin_options(bench)
    _workload_options(bench, "small")  # 5 sets x 3 fresh processes: small unless asked
    bench.add_argument("--repeats", type=int, default=3, help="runs per set (interleaved)")
    bench.add_argument("--cycles", type=int, default=None, help="scan cycles per run")
    bench.add_argument(
        "--sets",
        default="none,batching,pooling,warming,all",
        help="comma-separated plugin sets (a set is 'none', 'all' or plugin names joined by +)",
    )
    bench.add_argument("--json", metavar="PATH", type=Path, default=None, help="write results")
    bench.set_defaults(func=cmd_bench)


def workload_for(args: argparse.Namespace) -> Any:
    from sltrader_plugins.cli import config_from_args
    from sltrader_plugins.host.workload import workload_from

    cycles = getattr(args, "cycles", None)
    if cycles is not None and cycles < 1:
        from sltrader_plugins.config import ConfigError

        raise ConfigError(f"--cycles must be at least 1, got {cycles}")
    config = config_from_args(args)
    workload = workload_from(
        args.size,
        config.host,
        workers=args.workers,
        model=args.model,
        seed=args.seed,
        cycles=cycles,
    )
    return config, workload


def _progress(done: int, total: int, scan_s: float) -> None:
    every = max(1, total // 10)
    if done % every == 0 or done == total:
        print(f"sltrader: cycle {done}/{total} (last scan {scan_s * 1000:.0f} ms)", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from sltrader_plugins.cli import load_manager
    from sltrader_plugins.host.loop import Host
    from sltrader_plugins.host.report import format_report

    config, workload = workload_for(args)
    manager = load_manager(args, config)
    host = Host(workload, manager)
    report = host.run(progress=None if args.quiet else _progress)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sltrader_plugins.host.bench import run_bench

    return run_bench(args)
