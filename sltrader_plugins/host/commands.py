"""``sltrader run`` and ``sltrader bench``: wired into the CLI by ``add_commands``.

Nothing here imports scikit-learn or the host at import time, so ``sltrader plugins``
and ``--version`` stay light.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

INTERRUPTED = 130  #: the shell's exit status for a run ended by Ctrl-C (128 + SIGINT)


HOST_EXTRA = "python3 -m pip install 'sltrader-plugins[host]'"


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (one clear line otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _workload_options(parser: argparse.ArgumentParser, size: str) -> None:
    parser.add_argument(
        "--size",
        choices=("small", "full"),
        default=None,
        help=f"workload (default: [host] size, else {size})",
    )
    parser.set_defaults(default_size=size)
    parser.add_argument("--workers", type=at_least(1), default=None, help="worker threads")
    parser.add_argument("--model", choices=("sgd", "cheap"), default=None, help="model")
    parser.add_argument("--seed", type=at_least(0), default=None, help="market seed")


def host_missing() -> str | None:
    """Why the reference trader cannot run here (its model library is missing), or None."""
    if importlib.util.find_spec("sklearn") is None:
        return f"the reference trader needs scikit-learn, its 'host' extra: {HOST_EXTRA}"
    return None


def add_commands(commands: Any) -> None:
    """Add the ``run`` and ``bench`` subcommands to the CLI's subparsers."""
    from sltrader_plugins.cli import add_plugin_options

    run = commands.add_parser("run", help="run the reference trader with the active plugins")
    add_plugin_options(run)
    _workload_options(run, "full")  # the main job: the headline workload, about 20 s
    run.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles to run")
    run.add_argument("--json", metavar="PATH", type=Path, default=None, help="write the report")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser(
        "bench", help="compare plugin sets side by side on the reference workload"
    )
    add_plugin_options(bench)
    _workload_options(bench, "small")  # 5 sets x 3 fresh processes: small unless asked
    bench.add_argument("--repeats", type=at_least(1), default=3, help="runs per set")
    bench.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles per run")
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
    config = config_from_args(args)
    workload = workload_from(
        args.size or config.host.get("size") or args.default_size,
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

    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    config, workload = workload_for(args)
    manager = load_manager(args, config)
    host = Host(workload, manager)
    report = host.run(progress=None if args.quiet else _progress)
    if host.interrupted:
        print(
            f"sltrader: interrupted after {host.cycles_done} of {workload.cycles} cycles; "
            "the report covers those",
            file=sys.stderr,
        )
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(
            json.dumps(report.as_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )
    return INTERRUPTED if host.interrupted else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sltrader_plugins.host.bench import run_bench

    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    return run_bench(args)
