"""``sltrader bench --traders N``: N trader processes at once on one served exchange.

1. Each trader alone, no plugins, on the served exchange without a limit: its decisions
   digest (``solo_digests``) and the exchange's peak of requests in one window.
2. The exchange again, now with one global rate limit: by default between one trader's
   peak and N times it (``(N + 1) / 2`` times the solo peak), so one trader alone stays
   under it and N independent ones, together, go over it.
3. Per set (``none``, ``shared``, ``shared+warming``...), the N traders at once, each a
   fresh process. For a set with ``shared``: a private ``redis-server`` on a free
   localhost port unless ``[plugins.shared] url`` is configured, and the shared budget
   (``requests_per_minute``) at 80 % of the exchange's limit.

Trader ``i`` trades ``Workload.trader(i)`` (thresholds offset per trader), so each
trader's digest says something of its own: it must equal its solo run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from sltrader_plugins.bench.reference import installed_names, resolve_sets, worker
from sltrader_plugins.bench.trader import TraderBenchError, private_redis
from sltrader_plugins.config import Config
from sltrader_plugins.host.arguments import workload_for
from sltrader_plugins.output.terminal import Table, Terminal
from sltrader_plugins.served import RateLimit

#: The window of the derived rate limit: a minute, as exchanges count (Binance: weight
#: per minute).
AUTO_WINDOW_S = 60.0
#: The shared budget as a share of the exchange's limit (headroom for the burst).
SHARED_BUDGET = 0.8
#: How long a helper process (the exchange, redis-server) may take to start.
START_TIMEOUT_S = 30.0
#: The sets ``sltrader bench --traders`` compares unless ``--sets`` names others.
DEFAULT_TRADER_SETS = "none,shared"
#: Simulated seconds per real second: all traders of a run scan on one schedule, cycle k
#: at start + k x scan interval / speed (a 7.5 s scan interval is 0.5 s), as traders on
#: one real clock do; free-running simulated clocks would drift apart.
DEFAULT_SPEED = 15.0
#: Wall time between the last trader's start and cycle 0 (the others hear of it).
GO_AHEAD_S = 0.05
SHARED_INSTALL = "python3 -m pip install sltrader-shared (or plugins/shared of the checkout)"


class BenchError(Exception):
    """The bench cannot go on: one line for the user."""


def run_traders_bench(args: argparse.Namespace, terminal: Terminal | None = None) -> dict[str, Any]:
    """Run the bench, print its table, write ``--json``; return the result."""
    terminal = terminal or Terminal.detect()
    config, workload = workload_for(args)
    n = int(args.traders)
    for i in range(n):
        workload.trader(i)  # thresholds that leave [0, 1]: one line now, not later
    installed = installed_names()
    sets = resolve_sets(args.sets or DEFAULT_TRADER_SETS, installed)
    for name, plugins in sets:
        if plugins is None:
            missing = [p for p in name.split("+") if p not in installed and name != "all"]
            hint = f": {SHARED_INSTALL}" if "shared" in missing else ""
            raise BenchError(
                f"set {name!r} needs plugins that are not installed ({', '.join(missing)}){hint}; "
                "--sets none runs without them"
            )
    speed = float(args.speed or DEFAULT_SPEED)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sltrader-traders-") as tmp_name:
        tmp = Path(tmp_name)
        base_config = tmp / "sltrader.toml"
        base_config.write_text(config_toml(config), encoding="utf-8")
        common = _common_options(args, workload)

        # 1. each trader alone, on an exchange without a limit
        solo: list[dict[str, Any]] = []
        peaks: list[int] = []
        with _exchange(tmp, base_config, common, RateLimit(0, AUTO_WINDOW_S)) as url:
            for i in range(n):
                _say(f"solo runs: trader {i + 1} of {n}")
                _restart_window(url)
                solo.append(
                    _run_traders(tmp, f"solo-{i}", url, base_config, common, "", [i], speed)[0]
                )
                peaks.append(int(_stats(url)["peak_window_requests"]))
        peak = max(peaks)
        limit = args.rate_limit or RateLimit(max(1, math.floor(peak * (n + 1) / 2)), AUTO_WINDOW_S)
        rule = (
            "given (--rate-limit)"
            if args.rate_limit
            else f"floor(solo peak {peak} per {AUTO_WINDOW_S:g} s x (N + 1) / 2)"
        )
        _say(f"exchange rate limit: {limit} ({rule})")
        budget = math.floor(SHARED_BUDGET * limit.requests * 60.0 / limit.window_s)
        # A token bucket lets through at most burst + rate x T in any T seconds: with the
        # rest of the limit as the burst, no window of the exchange's is ever over it.
        burst = max(1, limit.requests - math.ceil(budget * limit.window_s / 60.0))

        # 2. the N traders at once, per set
        results: dict[str, dict[str, Any]] = {}
        with _exchange(tmp, base_config, common, limit) as url:
            for name, plugins in sets:
                set_config = base_config
                with contextlib.ExitStack() as stack:
                    if "shared" in plugins.split(","):
                        redis_url = config.plugin("shared").get("url") or stack.enter_context(
                            _redis(tmp)
                        )
                        set_config = tmp / f"{name}.toml"
                        shared: dict[str, Any] = {
                            "url": redis_url,
                            "namespace": f"sltrader-bench-{os.getpid()}-{name.replace('+', '-')}",
                        }
                        if budget:
                            shared.update(requests_per_minute=budget, burst=burst)
                        set_config.write_text(
                            config_toml(config, {"shared": shared}), encoding="utf-8"
                        )
                    # A set starts on an empty window, as the first one does: the
                    # previous set's requests must not refuse this one's.
                    _restart_window(url)
                    before = _stats(url)
                    reports = _run_traders(
                        tmp, name, url, set_config, common, plugins, range(n), speed
                    )
                    after = _stats(url)
                results[name] = _set_figures(reports, before, after, solo)
    result = {
        "traders": n,
        "solo_digests": [r["decisions_digest"] for r in solo],
        "sets": results,
        "solo": [_trader_figures(r) for r in solo],
        "rate_limit": {
            "requests": limit.requests,
            "window_s": limit.window_s,
            "solo_peak_window_requests": peaks,
            "rule": rule,
        },
        "shared_requests_per_minute": budget,
        "shared_burst": burst,
        "workload": {
            **workload.as_dict(),
            "sets": dict(sets),
            "bench_seconds": time.perf_counter() - started,
            "speed": speed,
            "python": sys.version.split()[0],
        },
    }
    terminal.report(format_traders_table(result), [traders_table(result)])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    return result


def _say(text: str) -> None:
    print(f"sltrader bench: {text}", file=sys.stderr, flush=True)


def _common_options(args: argparse.Namespace, workload: Any) -> list[str]:
    """What every process of the bench is given so that all build the same workload."""
    options = ["--size", workload.size, "--seed", str(workload.seed)]
    options += ["--cycles", str(workload.cycles)]
    if getattr(args, "latency", None):
        options += ["--latency", args.latency]
    return options


def _run_traders(
    tmp: Path,
    name: str,
    url: str,
    config: Path,
    common: list[str],
    plugins: str,
    traders: Any,
    speed: float,
) -> list[dict[str, Any]]:
    """Traders at once, each a fresh process; their reports, in trader order."""
    running = []
    try:
        for i in traders:
            out = tmp / f"{name}-trader{i}.json"
            log = (tmp / f"{name}-trader{i}.log").open("w", encoding="utf-8")
            command, env = worker(
                plugins,
                out,
                "--exchange",
                url,
                "--trader",
                str(i),
                "--config",
                str(config),
                "--no-allocations",
                "--speed",
                repr(speed),
                *common,
            )
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=tmp,
                text=True,
            )
            running.append((i, process, out, log))
        # A barrier: every trader has started its plugins (the shared ones marked
        # themselves present) before any scans; then all start cycle 0 together.
        pipes = [(process.stdin, process.stdout) for _, process, _, _ in running]
        started = [bool(out) and out.readline().strip() == "started" for _, out in pipes]
        start_at = repr(time.time() + GO_AHEAD_S)
        for (stdin, _), ok in zip(pipes, started, strict=True):
            if stdin and ok:  # one that failed to start is reported below
                stdin.write(start_at + "\n")
                stdin.close()
        reports = []
        for done, (i, process, out, log) in enumerate(running, 1):
            code = process.wait()
            log.close()
            if code != 0:
                tail = Path(log.name).read_text(encoding="utf-8")[-2000:].strip()
                last = tail.splitlines()[-1] if tail else f"exit status {code}"
                raise BenchError(f"set {name!r}: trader {i} failed: {last}")
            if len(running) > 1:
                _say(f"set {name}: {done} of {len(running)} traders done")
            reports.append(json.loads(out.read_text(encoding="utf-8")))
        return reports
    finally:
        for _, process, _, log in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


def _trader_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "decisions_digest": report["decisions_digest"],
        "exchange_requests": report["exchange_requests"],
        "scan_wall_s": report["scan_wall_s"],
        "cache_hit_rate": report["cache_hit_rate"],
        "run_seconds": report["run_seconds"],
        "skipped": report["skipped"],
        "plugin_metrics": report["plugin_metrics"],
    }


def _set_figures(
    reports: list[dict[str, Any]],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    solo: list[dict[str, Any]],
) -> dict[str, Any]:
    hits = sum(r["cache_hits"] for r in reports)
    reads = hits + sum(r["cache_misses"] for r in reports)
    digests = [r["decisions_digest"] for r in reports]
    return {
        "exchange_requests": after["requests"] - before["requests"],
        "rate_limited": after["rate_limited"] - before["rate_limited"],
        "digests": digests,
        "digests_equal_solo": digests == [r["decisions_digest"] for r in solo],
        "scan_wall_s": sum(r["scan_wall_s"] for r in reports) / len(reports),
        "cache_hit_rate": hits / reads if reads else 0.0,
        "traders": [_trader_figures(r) for r in reports],
    }


# -- helper processes ------------------------------------------------------------------------


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/sltrader/v1/stats", timeout=10) as answer:
        return json.loads(answer.read())


def _restart_window(url: str) -> None:
    request = urllib.request.Request(f"{url}/sltrader/v1/window/restart", method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


@contextlib.contextmanager
def _exchange(tmp: Path, config: Path, common: list[str], limit: RateLimit) -> Iterator[str]:
    """``sltrader exchange`` in a subprocess; yields its URL, stops it with Ctrl-C."""
    command = [sys.executable, "-m", "sltrader_plugins.cli", "exchange", "--port", "0"]
    command += ["--config", str(config), "--rate-limit", _limit_text(limit), *common]
    log = (tmp / "exchange.log").open("a", encoding="utf-8")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp)
    try:
        url = _first_line(process)
        if not url.startswith("http://"):
            process.wait(timeout=START_TIMEOUT_S)
            log.flush()
            tail = (tmp / "exchange.log").read_text(encoding="utf-8").strip().splitlines()
            raise BenchError(f"the exchange did not start: {tail[-1] if tail else url!r}")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()


def _limit_text(limit: RateLimit) -> str:
    return f"{limit.requests}/{limit.window_s:g}s"


def _first_line(process: subprocess.Popen[str]) -> str:
    stream: IO[str] | None = process.stdout
    assert stream is not None
    return stream.readline().strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _redis(tmp: Path) -> Iterator[str]:
    """A private ``redis-server`` on a free localhost port, nothing saved; yields its URL."""
    try:
        with private_redis(tmp, needs="the shared set (or set [plugins.shared] url)") as (url, _):
            yield url
    except TraderBenchError as exc:
        raise BenchError(str(exc)) from exc


# -- the configuration file of the children ---------------------------------------------------


def config_toml(config: Config, plugins: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """``config`` as a ``sltrader.toml``, with ``plugins``' keys added to their sections."""
    lines = []
    if config.enable is not None:
        lines.append(f"enable = {_value(list(config.enable))}")
    lines.append(f"hook_timeout_s = {_value(config.hook_timeout_s)}")
    if config.host:
        lines += ["", "[host]", *(f"{k} = {_value(v)}" for k, v in config.host.items())]
    sections = {name: dict(section) for name, section in config.plugins.items()}
    for name, extra in (plugins or {}).items():
        sections.setdefault(name, {}).update(extra)
    for name, section in sections.items():
        lines += ["", f"[plugins.{json.dumps(name)}]"]
        lines += [f"{k} = {_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise BenchError(f"cannot pass the configuration value {value!r} to the traders")


# -- the table ------------------------------------------------------------------------------


def _rows(result: Mapping[str, Any]) -> list[tuple[str, ...]]:
    sets = result["sets"]
    base = sets.get("none", {}).get("exchange_requests")
    rows = []
    for name, row in sets.items():
        requests = f"{row['exchange_requests']}"
        if base and name != "none":
            requests += f" (x{row['exchange_requests'] / base:.2f})"
        rows.append(
            (
                name,
                requests,
                str(row["rate_limited"]),
                f"{row['scan_wall_s']:.4f}",
                f"{row['cache_hit_rate']:.3f}",
                "yes" if row["digests_equal_solo"] else "NO",
            )
        )
    return rows


COLUMNS = ("set", "exchange requests", "rate limited", "scan wall (s)", "hit rate", "= solo")


def _title(result: Mapping[str, Any]) -> str:
    limit = result["rate_limit"]
    return (
        f"sltrader bench: {result['traders']} traders at once, {result['workload']['size']} "
        f"workload, exchange limit {limit['requests'] or 'off'} per {limit['window_s']:g} s "
        f"({limit['rule']}), shared budget {result['shared_requests_per_minute']}/min, "
        f"burst {result.get('shared_burst', '-')}"
    )


def format_traders_table(result: Mapping[str, Any]) -> str:
    """The table as plain text: per set, requests of all traders (ratio against none),
    rate-limited answers, mean scan wall, hit rate, every digest equal to its solo run."""
    widths = (16, 20, 14, 15, 10, 8)
    lines = [_title(result), "".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths, strict=True))]
    for row in _rows(result):
        lines.append("".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)))
    lines.append("solo digests: " + ", ".join(d[:12] for d in result["solo_digests"]))
    return "\n".join(lines)


def traders_table(result: Mapping[str, Any]) -> Table:
    return Table(
        title=_title(result),
        columns=COLUMNS,
        groups=[_rows(result)],
        caption="solo digests: " + ", ".join(d[:12] for d in result["solo_digests"]),
    )
