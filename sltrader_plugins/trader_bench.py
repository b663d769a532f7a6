"""``sltrader bench --trader MODULE:FUNCTION``: every plugin set side by side on your trader.

``FUNCTION(cycles)`` runs ``cycles`` cycles of your trader as you run it, loading its plugins
as it always does (``Plugins.load()``), and returns its decisions: a list of anything JSON
can write (signals, orders). The bench runs it once per plugin set and repeat, each in a
fresh process whose ``SLTRADER_PLUGINS`` chooses the set (so a ``plugins=`` of your own in
``Plugins.load`` would override it: leave it out for the bench), interleaved and rotated so
that no set always runs first. It compares the wall time of each run and the peak memory
of its process against the set ``none``, and the decisions against ``none``'s: equal, or
the bench says which set decided differently. A run's time includes your start-up (a model
trained, a history read): give enough cycles that the cycles dominate.

Nothing here imports the reference host or a library beyond the standard one.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from sltrader_plugins.manager import ENV_PLUGINS, installed_entry_points

#: The plugin sets compared unless ``--sets`` names others.
DEFAULT_SETS = "none,batching,pooling,warming,all"


class TraderBenchError(Exception):
    """The trader cannot be benchmarked (it cannot be imported, or a run failed)."""


def installed_names() -> list[str]:
    """The entry-point names of the installed plugins."""
    return sorted({ep.name for ep in installed_entry_points()})


def resolve_sets(text: str, installed: list[str]) -> list[tuple[str, str | None]]:
    """``(set name, enable list)`` for each name of ``text`` (``none``, ``all``, a plugin,
    or plugins joined by ``+``); the list is ``None`` when a plugin is not installed."""
    out: list[tuple[str, str | None]] = []
    for name in (s.strip() for s in text.split(",") if s.strip()):
        if name == "none":
            out.append((name, ""))
        elif name == "all":
            out.append((name, ",".join(installed) if installed else None))
        else:
            wanted = name.split("+")
            missing = [p for p in wanted if p not in installed]
            out.append((name, None if missing else ",".join(wanted)))
    return out


def load_trader(target: str) -> Callable[[int], Iterable[Any]]:
    """The function ``MODULE:FUNCTION`` names.

    :raises TraderBenchError: it cannot be imported, or is not callable.
    """
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise TraderBenchError(f"--trader {target!r}: expected MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TraderBenchError(f"--trader {target!r}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise TraderBenchError(f"--trader {target!r}: {module_name} has no function {name!r}")
    return function  # type: ignore[no-any-return]


def decisions_digest(decisions: Sequence[Any]) -> str:
    """A digest of the decisions as JSON writes them (keys sorted): equal decisions, equal
    digests."""
    text = json.dumps(list(decisions), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def run_once(target: str, cycles: int) -> dict[str, Any]:
    """Run the trader in this process: what one bench run measures."""
    trader = load_trader(target)
    start = time.perf_counter()
    decisions = list(trader(cycles))
    wall = time.perf_counter() - start
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {
        "wall_s": wall,
        "seconds_per_cycle": wall / cycles,
        "peak_rss_mb": peak / 2**20,
        "decisions": len(decisions),
        "decisions_digest": decisions_digest(decisions),
    }


def _run_child(target: str, cycles: int, plugins: str, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", __name__, target, "--cycles", str(cycles), "--out", str(out)]
    env = {**os.environ, ENV_PLUGINS: plugins}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TraderBenchError(
            f"the run with plugins {plugins or 'none'!r} failed:\n{done.stderr[-4000:]}"
        )
    return json.loads(out.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def bench_trader(
    target: str,
    sets: str = DEFAULT_SETS,
    repeats: int = 3,
    cycles: int = 10,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Run every installed set of ``sets`` ``repeats`` times on the trader ``target``.

    :return: every run and, per set, the medians, their ratios to ``none`` and whether
        its decisions equal ``none``'s in every run.
    :raises TraderBenchError: the trader cannot be imported, or a run failed.
    """
    load_trader(target)  # a wrong name fails here, before any run
    progress = progress or sys.stderr
    chosen = []
    for name, plugins in resolve_sets(sets, installed_names()):
        if plugins is None:
            print(f"skipping set {name!r}: its plugins are not installed", file=progress)
        else:
            chosen.append((name, plugins))
    if not chosen:
        raise TraderBenchError(f"no set of {sets!r} can run")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in chosen}
    total = repeats * len(chosen)
    with tempfile.TemporaryDirectory(prefix="sltrader-trader-bench-") as tmp:
        for repeat in range(repeats):
            turn = repeat % len(chosen)  # rotated: each set runs first in its turn
            for name, plugins in chosen[turn:] + chosen[:turn]:
                run = _run_child(target, cycles, plugins, Path(tmp) / f"{name}-{repeat}.json")
                runs[name].append(run)
                done = sum(map(len, runs.values()))
                print(
                    f"[{done}/{total}] {name}: {run['seconds_per_cycle'] * 1000:.1f} ms/cycle",
                    file=progress,
                )
    return {
        "trader": target,
        "cycles": cycles,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "sets": _summaries(runs),
        "runs": runs,
    }


def _summaries(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    base = runs.get("none")
    summaries = {}
    for name, rows in runs.items():
        summary: dict[str, Any] = {
            "plugins": name,
            "seconds_per_cycle": statistics.median(r["seconds_per_cycle"] for r in rows),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
            "decisions": rows[0]["decisions"],
        }
        if base is not None:
            summary["time_ratio"] = summary["seconds_per_cycle"] / statistics.median(
                r["seconds_per_cycle"] for r in base
            )
            summary["rss_ratio"] = summary["peak_rss_mb"] / statistics.median(
                r["peak_rss_mb"] for r in base
            )
            reference = {r["decisions_digest"] for r in base}
            summary["same_decisions"] = len(reference) == 1 and all(
                r["decisions_digest"] in reference for r in rows
            )
        summaries[name] = summary
    return summaries


def format_table(result: dict[str, Any]) -> str:
    """The bench as a text table: medians, and ratios to ``none`` where it ran."""
    head = (
        f"{result['trader']}: {result['cycles']} cycles, median of {result['repeats']} "
        "runs per set (ratio: against none; lower is better)"
    )
    lines = [head, f"{'set':<24} {'ms/cycle':>10} {'x none':>7} {'peak MB':>8} {'x none':>7}"]
    for name, s in result["sets"].items():
        time_ratio = f"x{s['time_ratio']:.2f}" if "time_ratio" in s else "-"
        rss_ratio = f"x{s['rss_ratio']:.2f}" if "rss_ratio" in s else "-"
        lines.append(
            f"{name:<24} {s['seconds_per_cycle'] * 1000:>10.1f} {time_ratio:>7} "
            f"{s['peak_rss_mb']:>8.1f} {rss_ratio:>7}"
        )
    differ = [n for n, s in result["sets"].items() if s.get("same_decisions") is False]
    if differ:
        lines.append(f"DECISIONS DIFFER from none's: {', '.join(differ)}")
    elif "none" in result["sets"]:
        lines.append("decisions: every set decided as none did")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """One run in this process (what the bench starts): ``TARGET --cycles N --out PATH``."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("target", help="MODULE:FUNCTION")
    parser.add_argument("--cycles", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(run_once(args.target, args.cycles)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
