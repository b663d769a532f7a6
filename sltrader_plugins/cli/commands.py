"""``sltrader run``, ``bench``, ``report`` and ``exchange``: wired into the CLI by
``add_commands``.

Nothing here imports scikit-learn at import time (the host's model does, when a trader
is built), so ``sltrader plugins`` and ``--version`` stay light.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from sltrader_plugins.bench.reference import DEFAULT_SETS, bench_table, format_table, run_bench
from sltrader_plugins.bench.trader import (
    TraderBenchError,
    bench_trader,
    format_markdown,
    parse_workers,
)
from sltrader_plugins.bench.trader import format_table as format_trader_table
from sltrader_plugins.bench.traders import (
    DEFAULT_TRADER_SETS,
    BenchError,
    run_traders_bench,
)
from sltrader_plugins.host.arguments import at_least, host_missing, workload_for, workload_options
from sltrader_plugins.host.exchange import ExchangeError
from sltrader_plugins.host.loop import Host
from sltrader_plugins.options import add_plugin_options, load_manager
from sltrader_plugins.output.plot import INSTALL_HINT, plot_bench
from sltrader_plugins.output.report import format_report, report_tables
from sltrader_plugins.output.terminal import Terminal
from sltrader_plugins.served import (
    ExchangeServer,
    RateLimit,
    RateLimitError,
    ServedMarket,
    served_exchange,
)

INTERRUPTED = 130  #: the shell's exit status for a run ended by Ctrl-C (128 + SIGINT)


def rate_limit(text: str) -> RateLimit:
    """An argparse type: ``--rate-limit`` (one clear line otherwise)."""
    try:
        return RateLimit.parse(text)
    except RateLimitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> float:
    """An argparse type: a finite number above 0 (one clear line otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def worker_counts(text: str) -> list[int]:
    """An argparse type: ``--workers`` of the bench, one count or (with ``--trader``)
    several joined by commas."""
    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bench_rate_limit(text: str) -> RateLimit | None:
    """``--rate-limit`` of the bench: ``auto`` (``None``: derived from the solo runs)."""
    return None if text.strip().lower() == "auto" else rate_limit(text)


def add_commands(commands: Any) -> None:
    """Add the ``run``, ``bench``, ``report`` and ``exchange`` subcommands."""
    run = commands.add_parser("run", help="run the reference trader with the active plugins")
    add_plugin_options(run)
    workload_options(run, "full")  # the main job: the headline workload, about 20 s
    run.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles to run")
    run.add_argument("--json", metavar="PATH", type=Path, default=None, help="write the report")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.add_argument(
        "--counters", action="store_true", help="every plugin's raw counters too (also in --json)"
    )
    run.add_argument(
        "--exchange",
        metavar="URL",
        default=None,
        help="trade on a served exchange (sltrader exchange) instead of the embedded one",
    )
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser(
        "bench", help="compare plugin sets side by side on the reference workload"
    )
    add_plugin_options(bench)
    workload_options(  # 5 sets x 3 fresh processes: small unless asked
        bench,
        "small",
        workers=worker_counts,
        workers_help="worker threads; with --trader, counts joined by commas (1,4,8,16): "
        "FUNCTION(cycles, workers) runs each",
    )
    bench.add_argument("--repeats", type=at_least(1), default=3, help="runs per set")
    bench.add_argument("--cycles", type=at_least(1), default=None, help="scan cycles per run")
    bench.add_argument(
        "--sets",
        default=None,
        help="comma-separated plugin sets (a set is 'none', 'all', plugin names joined by + or "
        "'control', none again: the noise; "
        f"default {DEFAULT_SETS}, with --traders {DEFAULT_TRADER_SETS})",
    )
    bench.add_argument("--json", metavar="PATH", type=Path, default=None, help="write results")
    bench.add_argument("--plot", metavar="PNG", type=Path, default=None, help="draw the results")
    bench.add_argument(
        "--trader",
        metavar="MODULE:FUNCTION",
        default=None,
        help="your own trader instead of the reference workload: FUNCTION(cycles) runs it, "
        "loading its plugins with Plugins.load(), and returns its decisions "
        "(default 10 cycles)",
    )
    bench.add_argument(
        "--redis",
        action="store_true",
        help="with --trader: a private redis-server (on PATH) for the shared plugin, "
        "emptied before every run (each run is one trader alone)",
    )
    bench.add_argument(
        "--traders",
        type=at_least(1),
        default=None,
        help="N trader processes at once on one served exchange, each set against each "
        "trader alone (sets default to none,shared)",
    )
    bench.add_argument(
        "--rate-limit",
        type=bench_rate_limit,
        default=None,
        metavar="N/WINDOW",
        help="with --traders: the exchange's limit, e.g. 1200/1m (default 'auto': between "
        "one trader's peak per minute and N times it)",
    )
    bench.add_argument(
        "--speed",
        type=positive,
        default=None,
        metavar="X",
        help="with --traders: simulated seconds per real second; every trader scans on "
        "that one schedule (default 15: a 7.5 s scan interval every 0.5 s)",
    )
    bench.set_defaults(func=cmd_bench)

    exchange = commands.add_parser(
        "exchange", help="serve the workload's replay exchange over HTTP on localhost"
    )
    exchange.add_argument(
        "--size",
        choices=("small", "full"),
        default=None,
        help="workload (default: [host] size, else full); traders must use the same",
    )
    exchange.set_defaults(default_size="full")
    exchange.add_argument("--seed", type=at_least(0), default=None, help="market seed")
    exchange.add_argument(
        "--cycles", type=at_least(1), default=None, help="cycles the market is generated for"
    )
    exchange.add_argument(
        "--latency",
        choices=("lan", "wan"),
        default=None,
        help="latency slept per request (default: [host] latency, else lan)",
    )
    exchange.add_argument(
        "--rate-limit",
        type=rate_limit,
        default=RateLimit(),
        metavar="N/WINDOW",
        help="requests of all clients in any rolling window, e.g. 1200/1m or 600/10s "
        "(default: off); over it, HTTP 429 with Retry-After",
    )
    exchange.add_argument("--host", default="127.0.0.1", help="address to bind")
    exchange.add_argument("--port", type=at_least(0), default=0, help="port (0: a free one)")
    exchange.add_argument(
        "--config", metavar="PATH", type=Path, default=None, help="configuration file"
    )
    exchange.set_defaults(func=cmd_exchange, strict=False)

    report = commands.add_parser("report", help="show a saved bench (sltrader bench --json)")
    report.add_argument("bench", metavar="BENCH.json", type=Path, help="a saved bench")
    report.add_argument("--plot", metavar="PNG", type=Path, default=None, help="draw it")
    report.add_argument(
        "--markdown",
        action="store_true",
        help="a trader bench (bench --trader --json) as a Markdown table",
    )
    report.set_defaults(func=cmd_report)


def cmd_run(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """:param terminal: where and how to write (default: this process's streams)."""
    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    terminal = terminal or Terminal.detect()
    config, workload = workload_for(args)
    manager = load_manager(args, config)
    try:
        host = Host(workload, manager, wrap_exchange=served_exchange(args.exchange))
        with terminal.cycles(workload.cycles, quiet=args.quiet) as progress:
            report = host.run(progress=progress)
    except ExchangeError as exc:
        print(f"sltrader: error: {exc}", file=sys.stderr)
        return 2
    if host.interrupted:
        print(
            f"sltrader: interrupted after {host.cycles_done} of {workload.cycles} cycles; "
            "the report covers those",
            file=sys.stderr,
        )
    terminal.report(
        format_report(report, counters=args.counters), report_tables(report, args.counters)
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(report.as_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )
    return INTERRUPTED if host.interrupted else 0


def cmd_bench(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """:param terminal: where and how to write (default: this process's streams)."""
    if args.trader is not None:
        return cmd_bench_trader(args)
    if args.redis:
        print("sltrader: error: --redis applies with --trader only", file=sys.stderr)
        return 2
    if args.workers is not None:
        if len(args.workers) > 1:
            print(
                "sltrader: error: --workers takes one count (several: with --trader)",
                file=sys.stderr,
            )
            return 2
        args.workers = args.workers[0]
    if (missing := host_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)
        return 2
    if args.plot is not None and (missing := plot_missing()) is not None:
        print(f"sltrader: error: {missing}", file=sys.stderr)  # before a long bench, not after
        return 2
    if args.traders is not None:
        if args.plot is not None:
            print(
                "sltrader: error: --plot draws a plugin-set bench, not --traders", file=sys.stderr
            )
            return 2
        try:
            run_traders_bench(args, terminal)
        except BenchError as exc:
            print(f"sltrader bench: error: {exc}", file=sys.stderr)
            return 2
        return 0
    for option in ("rate_limit", "speed"):
        if getattr(args, option) is not None:
            name = option.replace("_", "-")
            print(f"sltrader: error: --{name} applies with --traders only", file=sys.stderr)
            return 2
    result = run_bench(args, terminal)
    if args.plot is not None:
        plot_bench(result, args.plot)
        print(f"sltrader bench: wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_bench_trader(args: argparse.Namespace) -> int:
    """``sltrader bench --trader``: the plugin sets on the user's own trader (no host)."""
    # The reference workload's options, and the plugin options the sets replace: the
    # trader runs its own market, and each set is its SLTRADER_PLUGINS.
    unused = ("traders", "plot", "rate_limit", "speed", "size", "model", "seed", "latency")
    for option in (*unused, "plugins", "config", "strict"):
        value = getattr(args, option)
        if value is not None and value is not False:  # not given (--seed 0 is given)
            name = option.replace("_", "-")
            print(f"sltrader: error: --{name} does not apply with --trader", file=sys.stderr)
            return 2
    # MODULE imports from the working directory, as with python -m (each run is one)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        result = bench_trader(
            args.trader,
            args.sets or DEFAULT_SETS,
            args.repeats,
            args.cycles or 10,
            workers=args.workers,
            redis=args.redis,
            command=getattr(args, "argv", None),
        )
    except TraderBenchError as exc:
        print(f"sltrader bench: error: {exc}", file=sys.stderr)
        return 2
    print(format_trader_table(result))
    if args.json is not None:
        # not sorted: the sets and the worker counts stay in the order they were given
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def cmd_exchange(args: argparse.Namespace) -> int:
    """Serve the workload's market until Ctrl-C; the URL is the first line of stdout."""
    _, workload = workload_for(args)
    market = ServedMarket(
        workload.market(), workload.symbol_names(), workload.latency_profile(), args.rate_limit
    )
    try:
        server = ExchangeServer((args.host, args.port), market)
    except OSError as exc:
        print(
            f"sltrader: error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    print(server.url, flush=True)
    profile = workload.latency_profile()
    print(
        f"sltrader exchange: {workload.size} workload ({workload.symbols} symbols, seed "
        f"{workload.seed}, {workload.cycles} cycles), latency {workload.latency} "
        f"({profile.mean_ms:g} ms ± {profile.jitter:.0%}), rate limit {args.rate_limit}; "
        "Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        server.server_close()
    return 0  # pragma: no cover - serve_forever returns only after shutdown()


def cmd_report(args: argparse.Namespace, terminal: Terminal | None = None) -> int:
    """A saved bench's table again, and its plot with ``--plot``; a trader bench's
    (``bench --trader``) as text, or as Markdown with ``--markdown``."""
    try:
        result = json.loads(args.bench.read_text(encoding="utf-8"))
        if isinstance(result, dict) and "trader" in result:
            return _report_trader(args, result)
        table = format_table(result)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"sltrader: error: {args.bench} is not a saved bench: {exc}", file=sys.stderr)
        return 2
    if args.markdown:
        print(
            "sltrader: error: --markdown renders a trader bench (sltrader bench --trader "
            "--json), not the reference workload's",
            file=sys.stderr,
        )
        return 2
    (terminal or Terminal.detect()).report(table, [bench_table(result)])
    if args.plot is not None:
        if (missing := plot_missing()) is not None:
            print(f"sltrader: error: {missing}", file=sys.stderr)
            return 2
        plot_bench(result, args.plot)
        print(f"sltrader report: wrote {args.plot}", file=sys.stderr)
    return 0


def _report_trader(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """A saved trader bench: its table, or Markdown (a ``KeyError``: not one)."""
    if args.plot is not None:
        print("sltrader: error: --plot draws a reference bench, not --trader", file=sys.stderr)
        return 2
    text = format_markdown(result) if args.markdown else format_trader_table(result) + "\n"
    sys.stdout.write(text)
    return 0


def plot_missing() -> str | None:
    """Why a plot cannot be drawn here (matplotlib is missing), or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"plotting needs matplotlib, an optional extra: {INSTALL_HINT}"
    return None
