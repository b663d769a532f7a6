"""``sltrader run`` and ``sltrader bench``: wired into the CLI by ``add_commands``.

Nothing here imports scikit-learn at import time (the host's model does, when a trader
is built), so ``sltrader plugins`` and ``--version`` stay light.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from sltrader_plugins.host.arguments import at_least, host_missing, workload_for, workload_options
from sltrader_plugins.host.bench import bench_table, format_table, run_bench
from sltrader_plugins.host.loop import Host
from sltrader_plugins.host.plot import INSTALL_HINT, plot_bench
from sltrader_plugins.host.report import format_report, report_tables
from sltrader_plugins.host.terminal import Terminal
from sltrader_plugins.options import add_plugin_options, load_manager

INTERRUPTED = 130  #: the shell's exit status for a run ended by Ctrl-C (128 + SIGINT)


def add_commands(commands: Any) -> None:
    """Add the ``run``, ``bench`` and ``report`` subcommands to the CLI's subparsers."""
    run = commands.add_parser("run", help="run the reference trader with the active plugins")
    add_plugin_options(run)
    workload_options(run, "full")  # the main job: the headline workload, about 20 s
    run.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles to run")
    run.add_argument("--json", metavar="PATH", type=Path, default=None, help="write the report")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser(
        "bench", help="compare plugin sets side by side on the reference workload"
    )
    add_plugin_options(bench)
    workload_options(bench, "small")  # 5 sets x 3 fresh processes: small unless asked
    bench.add_argument("--repeats", type=at_least(1), default=3, help="runs per set")
    bench.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles per run")
    bench.add_argument(
        "--sets",
        default="none,batching,pooling,warming,all",
        help="comma-separated plugin sets (a set is 'none', 'all' or plugin names joined by +)",
    )
    bench.add_argument("--json", metavar="PATH", type=Path, default=None, help="write results")
    bench.add_argument("--plot", metavar="PNG", type=Path, default=None, help="draw the results")
    bench.set_defaults(func=cmd_bench)

    report = commands.add_parser("report", help="show a saved bench (sltrader bench --json)")
    report.add_argument("bench", metavar="BENCH.json", type=Path, help="a saved bench")
    report.add_argument("--plot", metavar="PNG", type=Path, default=None, help="draw it")
    report.set_defaults(func=cmd_report)


def cmd_run(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """:param terminal: where and how to write (default: this process's streams)."""
    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    terminal = terminal or Terminal.detect()
    config, workload = workload_for(args)
    manager = load_manager(args, config)
    host = Host(workload, manager)
    with terminal.cycles(workload.cycles, quiet=args.quiet) as progress:
        report = host.run(progress=progress)
    if host.interrupted:
        print(
            f"sltrader: interrupted after {host.cycles_done} of {workload.cycles} cycles; "
            "the report covers those",
            file=sys.stderr,
        )
    terminal.report(format_report(report), report_tables(report))
    if args.json is not None:
        args.json.write_text(
            json.dumps(report.as_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )
    return INTERRUPTED if host.interrupted else 0


def cmd_bench(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """:param terminal: where and how to write (default: this process's streams)."""
    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    if args.plot is not None and (missing := plot_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)  # before a long bench, not after
        return 2
    result = run_bench(args, terminal)
    if args.plot is not None:
        plot_bench(result, args.plot)
        print(f"sltrader bench: wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """A saved bench's table again, and its plot with ``--plot``."""
    try:
        result = json.loads(args.bench.read_text(encoding="utf-8"))
        table = format_table(result)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"sltrader: error: {args.bench} is not a saved bench: {exc}", file=sys.stderr)
        return 2
    (terminal or Terminal.detect()).report(table, [bench_table(result)])
    if args.plot is not None:
        if (missing := plot_missing()) is not None:
            print(f"sltrader: error: {missing}", file=sys.stderr)
            return 2
        plot_bench(result, args.plot)
        print(f"sltrader report: wrote {args.plot}", file=sys.stderr)
    return 0


def plot_missing() -> str | None:
    """Why a plot cannot be drawn here (matplotlib is missing), or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"plotting needs matplotlib, an optional extra: {INSTALL_HINT}"
    return None
