"""``sltrader bench``: plugin sets side by side on one workload, in fresh processes.

For each repeat, every set runs once (interleaved: none, batching, ..., none, batching,
...), each in its own process so memory figures are clean and no state leaks between
sets. The table shows the median over repeats and the ratio against ``none``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sltrader_plugins.bench.trader import DEFAULT_SETS, installed_names, machine, resolve_sets
from sltrader_plugins.host.arguments import workload_for
from sltrader_plugins.host.figures import Figure, figures
from sltrader_plugins.output.terminal import Table, Terminal

#: Figures of the bench itself, beyond a run's (sltrader_plugins.host.figures).
BENCH_FIGURES = {
    "max_prediction_diff": Figure(
        "max prediction diff",
        "probability",
        "largest difference from the plugin-free run's prediction for the same symbol",
        ".1e",
        table=True,
        better="lower",
    ),
}


def table_figures() -> dict[str, Figure]:
    """The rows of the bench's table, in report order."""
    every = {**figures(), **BENCH_FIGURES}
    return {name: fig for name, fig in every.items() if fig.table}


def worker(plugins: str, out: Path, *options: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one bench run: a fresh ``bench_worker`` process with
    exactly ``plugins`` (``SLTRADER_PLUGINS`` is dropped: nothing else may add a plugin)."""
    command = [
        sys.executable,
        "-m",
        "sltrader_plugins.bench.worker",
        "--plugins",
        plugins,
        "--out",
        str(out),
        *options,
    ]
    env = dict(os.environ)
    env.pop("SLTRADER_PLUGINS", None)
    return command, env


def _child(args: argparse.Namespace, plugins: str, out: Path, preds: Path) -> dict[str, Any]:
    options = ["--predictions", str(preds)]
    for option in ("size", "workers", "model", "seed", "cycles", "latency"):
        value = getattr(args, option, None)
        if value is not None:
            options += [f"--{option}", str(value)]
    if args.config is not None:
        options += ["--config", str(args.config)]
    command, env = worker(plugins, out, *options)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench run failed ({' '.join(command)}):\n{done.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def _predictions(path: Path) -> dict[tuple[str, str], float]:
    table = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            cycle, symbol, value = line.rstrip("\n").split("\t")
            table[(cycle, symbol)] = float(value)
    return table


def _max_diff(a: dict[tuple[str, str], float], b: dict[tuple[str, str], float]) -> float:
    if a.keys() != b.keys():
        return float("inf")  # a different set of predictions is not equivalent
    return max((abs(a[k] - b[k]) for k in a), default=0.0)


def _flatten(report: dict[str, Any]) -> dict[str, Any]:
    """One run's JSON report as a row: every figure, miss causes and plugin metrics."""
    row: dict[str, Any] = {k: report[k] for k in figures() if report.get(k) is not None}
    row.update({f"miss.{k}": v for k, v in report["miss_causes"].items()})
    row.update(
        {f"miss.higher_timeframe.{k}": v for k, v in report["higher_timeframe_miss_causes"].items()}
    )
    row.update(report["plugin_metrics"])
    row["plugin_faults"] = sum(report["plugin_faults"].values())
    row["decisions_digest"] = report["decisions_digest"]
    return row


def _scan_series(report: dict[str, Any]) -> dict[str, list[Any]]:
    """One run's scan wall time per cycle and which scans found stale series."""
    return {"scan_times_s": report["scan_times_s"], "stale": report["stale"]}


def _median(values: list[Any]) -> Any:
    if all(isinstance(v, (int, float)) for v in values):
        return statistics.median(values)
    distinct = sorted(set(map(str, values)))
    return distinct[0] if len(distinct) == 1 else "MIXED:" + ",".join(distinct)


def run_bench(args: argparse.Namespace, terminal: Terminal | None = None) -> dict[str, Any]:
    """Run the bench, print its table, write ``--json``; return the result."""
    terminal = terminal or Terminal.detect()
    _, workload = workload_for(args)
    sets = []
    for name, plugins in resolve_sets(args.sets or DEFAULT_SETS, installed_names()):
        if plugins is None:
            print(
                f"sltrader bench: skipping set {name!r}: its plugins are not installed",
                file=sys.stderr,
            )
        else:
            sets.append((name, plugins))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sets}
    scans: dict[str, list[dict[str, list[Any]]]] = {name: [] for name, _ in sets}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="sltrader-bench-") as tmp,
        terminal.runs(args.repeats, [name for name, _ in sets]) as progress,
    ):
        for repeat in range(args.repeats):
            preds: dict[str, dict[tuple[str, str], float]] = {}
            for name, plugins in sets:
                progress(repeat, name)
                out = Path(tmp) / f"{name}-{repeat}.json"
                pred_path = Path(tmp) / f"{name}-{repeat}.tsv"
                report = _child(args, plugins, out, pred_path)
                row = _flatten(report)
                preds[name] = _predictions(pred_path)
                if "none" in preds:
                    row["max_prediction_diff"] = _max_diff(preds["none"], preds[name])
                runs[name].append(row)
                scans[name].append(_scan_series(report))
    medians = {}
    for name, rows in runs.items():
        keys = sorted({k for row in rows for k in row})
        medians[name] = {k: _median([row[k] for row in rows if k in row]) for k in keys}
    result = {
        # every run's figures and scan times, for the spread of the repeats and the plot
        "runs": runs,
        "scans": scans,
        "workload": {
            **workload.as_dict(),
            "repeats": args.repeats,
            "sets": {name: plugins for name, plugins in sets},
            "bench_seconds": time.perf_counter() - started,
            "python": sys.version.split()[0],
        },
        "sets": medians,
        "command": getattr(args, "argv", ["sltrader", *sys.argv[1:]]),
        "machine": machine(),
    }
    terminal.report(format_table(result), [bench_table(result)])
    if args.json is not None:
        args.json.write_text(
            json.dumps(result, indent=2, sort_keys=True, default=str), encoding="utf-8"
        )
    return result


def _digests(result: dict[str, Any]) -> tuple[list[str], bool]:
    """Each set's decisions digest (shortened), and whether they are all equal."""
    digests = [str(row.get("decisions_digest", "")) for row in result["sets"].values()]
    return [d[:12] for d in digests], len(set(digests)) == 1


def _rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """A row per table figure: its label, then each set's median (ratio vs none)."""
    sets = result["sets"]
    base = sets.get("none", {})
    rows = []
    for key, fig in table_figures().items():
        cells = []
        for name, row in sets.items():
            value = row.get(key)
            if not isinstance(value, (int, float)):
                cells.append("-")
                continue
            text = format(value, fig.fmt)
            reference = base.get(key)
            if name != "none" and isinstance(reference, (int, float)) and reference:
                text += f" (x{value / reference:.2f})"
            cells.append(text)
        rows.append((fig.label, *cells))
    return rows


def _title(result: dict[str, Any]) -> str:
    return (
        f"sltrader bench: {result['workload']['size']} workload, "
        f"{result['workload']['repeats']} repeats, medians (ratio vs none)"
    )


def format_table(result: dict[str, Any]) -> str:
    """The bench's table as plain text (a pipe, a file, a log)."""
    names = list(result["sets"])
    width = max(22, *(len(name) + 2 for name in names))  # a set named a+b+c+d stays apart
    lines = [_title(result), f"{'metric':<30}" + "".join(f"{n:>{width}}" for n in names)]
    for label, *cells in _rows(result):
        lines.append(f"{label:<30}" + "".join(f"{cell:>{width}}" for cell in cells))
    digests, same = _digests(result)
    lines.append(
        f"{'decisions digest':<30}"
        + "".join(f"{d:>{width}}" for d in digests)
        + ("   (all equal)" if same else "   (DIFFERENT)")
    )
    return "\n".join(lines)


def bench_table(result: dict[str, Any]) -> Table:
    """The bench's table for a terminal: the same rows as :func:`format_table`."""
    digests, same = _digests(result)
    return Table(
        title=_title(result),
        columns=("metric", *result["sets"]),
        groups=[_rows(result), [("decisions digest", *digests)]],
        caption="decisions digests: " + ("all equal" if same else "DIFFERENT"),
    )
