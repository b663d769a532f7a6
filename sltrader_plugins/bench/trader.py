"""``sltrader bench --trader MODULE:FUNCTION``: every plugin set side by side on your trader.

``FUNCTION(cycles)`` runs ``cycles`` cycles of your trader as you run it, loading its plugins
as it always does (``Plugins.load()``), and returns its decisions: a list of anything JSON
can write (signals, orders). The bench runs it once per plugin set and repeat, each in a
fresh process whose ``SLTRADER_PLUGINS`` chooses the set (so a ``plugins=`` of your own in
``Plugins.load`` would override it: leave it out for the bench), interleaved and rotated so
that no set always runs first. It compares the wall time of each run and the peak memory
of its process against the set ``none``, and the decisions against ``none``'s: equal, or
the bench says which set decided differently. A run's time per cycle counts from its first
``plugins.scan(...)`` to its end; what comes before (``Plugins.load`` and the plugins'
imports, ``start``, a model trained, a history read; the trader module's own imports
come before the clock) is its start-up, measured apart: a plugin's one-off cost
(importing redis-py, say) shows there and not spread over however many cycles the bench
ran. A trader that never calls ``plugins.scan`` has its start-up counted in its cycles.

With ``--workers 1,4,8,16`` the bench calls ``FUNCTION(cycles, workers)`` instead, and runs
every (workers count, set) pair ``repeats`` times: within a repeat each pair runs once, the
counts and the sets rotated from one repeat to the next. Each count is compared on its
own: times, memory and decisions against ``none`` at the same count.

With ``--redis`` the bench starts a private ``redis-server`` (from ``PATH``; on a free
localhost port, nothing saved), gives every run its URL as
``SLTRADER__PLUGINS__SHARED__URL`` (the shared plugin's ``url``), empties it before every
run (no run finds another's series: each is one trader alone), and stops it at the end.

The JSON (``--json``)::

    {
      "trader": "MODULE:FUNCTION",
      "command": ["sltrader", "bench", ...],        # the command line that made it
      "machine": {"platform": ..., "cpus": 8, "python": "3.12.3"},
      "cycles": 10, "repeats": 3, "redis": false,
      # without --workers:
      "python": "3.12.3",
      "sets": {SET: SUMMARY, ...},                  # in the order they were given
      "runs": {SET: [RUN, ...], ...},
      # with --workers, instead of "python", "sets" and "runs": one entry per count
      "workers": {"4": {"sets": {SET: SUMMARY, ...}, "runs": {SET: [RUN, ...], ...}}, ...}
    }

    SUMMARY: {"plugins": SET, "seconds_per_cycle": median, "startup_s": median,
              "peak_rss_mb": median, "decisions": how many (first run), and when none
              ran (at the same count): "time_ratio", "rss_ratio" (medians against
              none's), "startup_extra_s" (median minus none's),
              "same_decisions" (every run's digest is none's one digest)}
    RUN:     {"wall_s", "startup_s", "seconds_per_cycle", "peak_rss_mb", "decisions",
              "decisions_digest"}

The ``"workers"`` keys are the counts as text, in the order given (``--json`` does not
sort them). Nothing here imports the reference host or a library beyond the standard one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import json
import os
import platform
import random
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from sltrader_plugins.callsites import Plugins
from sltrader_plugins.manager import ENV_PLUGINS, installed_entry_points

#: The plugin sets compared unless ``--sets`` names others.
DEFAULT_SETS = "none,batching,pooling,warming,all"
#: A set that is ``none`` again (an A/A test): its ratio to ``none`` is how far the
#: machine's noise alone moves a ratio in the same runs.
CONTROL = "control"
#: The variable that gives the runs the private Redis of ``--redis``: the shared plugin's
#: ``url`` (``[plugins.shared] url``; see ``config.settings_from_environment``).
ENV_SHARED_URL = "SLTRADER__PLUGINS__SHARED__URL"
#: How long ``redis-server`` may take to answer after it is started.
REDIS_START_S = 10.0


class TraderBenchError(Exception):
    """The trader cannot be benchmarked (it cannot be imported, or a run failed)."""


def installed_names() -> list[str]:
    """The entry-point names of the installed plugins."""
    return sorted({ep.name for ep in installed_entry_points()})


def resolve_sets(text: str, installed: list[str]) -> list[tuple[str, str | None]]:
    """``(set name, enable list)`` for each name of ``text`` (``none``, ``all``, a plugin,
    plugins joined by ``+``, or :data:`CONTROL`); the list is ``None`` when a plugin is not
    installed."""
    out: list[tuple[str, str | None]] = []
    for name in (s.strip() for s in text.split(",") if s.strip()):
        if name in ("none", CONTROL):
            out.append((name, ""))
        elif name == "all":
            out.append((name, ",".join(installed) if installed else None))
        else:
            wanted = name.split("+")
            missing = [p for p in wanted if p not in installed]
            out.append((name, None if missing else ",".join(wanted)))
    return out


def parse_workers(text: str) -> list[int]:
    """``"1,4,8,16"`` as ``[1, 4, 8, 16]``: counts of at least 1, each once.

    :raises ValueError: anything else, in one line.
    """
    counts = []
    for item in text.split(","):
        try:
            count = int(item.strip())
        except ValueError:
            raise ValueError(
                f"expected worker counts joined by commas (e.g. 1,4,8,16), got {text!r}"
            ) from None
        if count < 1:
            raise ValueError(f"a worker count must be at least 1, got {count}")
        if count in counts:
            raise ValueError(f"worker count {count} given twice in {text!r}")
        counts.append(count)
    return counts


def load_trader(target: str, workers: bool = False) -> Callable[..., Iterable[Any]]:
    """The function ``MODULE:FUNCTION`` names.

    :param workers: it is to be called as ``FUNCTION(cycles, workers)``.
    :raises TraderBenchError: it cannot be imported, is not callable, or (``workers``)
        takes no second argument.
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
    if workers and not _accepts(function, 1, 1):
        raise TraderBenchError(
            f"--trader {target!r}: {name}() takes no workers argument; with --workers the "
            f"bench calls {name}(cycles, workers)"
        )
    return function  # type: ignore[no-any-return]


def _accepts(function: Callable[..., Any], *args: Any) -> bool:
    try:
        inspect.signature(function).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): let the call tell
        return True
    return True


def decisions_digest(decisions: Sequence[Any]) -> str:
    """A digest of the decisions as JSON writes them (keys sorted): equal decisions, equal
    digests."""
    text = json.dumps(list(decisions), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def machine() -> dict[str, Any]:
    """Where the bench ran: the platform, the CPU count and Python's version."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


_STEP_ASIDES = ".step_asides"  #: the name of PayoffCounters.step_asides in metrics


@attrs.define
class _Watched:
    """What a bench run sees of the trader's ``Plugins`` (see :func:`_watching`)."""

    first_scan: float | None = None  #: perf_counter at the first ``Plugins.scan``
    summaries: dict[str, str] = attrs.Factory(dict)  #: each plugin's line, at close
    #: times each plugin stepped aside (its ``PayoffCounters.step_asides``), at close
    step_asides: dict[str, int] = attrs.Factory(dict)


@contextlib.contextmanager
def _watching() -> Iterator[_Watched]:
    """While inside, the first ``Plugins.scan`` call is timed (where the trader's start-up
    ends, imports, ``Plugins.load``, ``start`` and a model trained, and its cycles begin)
    and what the plugins bought is read when the trader closes them."""
    watched = _Watched()
    scan, close = Plugins.scan, Plugins.close

    def timed(self: Plugins, *args: Any, **kwargs: Any) -> Any:
        if watched.first_scan is None:
            watched.first_scan = time.perf_counter()
        return scan(self, *args, **kwargs)

    def closing(self: Plugins, *args: Any, **kwargs: Any) -> None:
        close(self, *args, **kwargs)
        watched.summaries = self.summaries()
        watched.step_asides = {
            name.removesuffix(_STEP_ASIDES): int(value)
            for name, value in self.metrics().items()
            if name.endswith(_STEP_ASIDES)
        }

    Plugins.scan, Plugins.close = timed, closing  # type: ignore[method-assign]
    try:
        yield watched
    finally:
        Plugins.scan, Plugins.close = scan, close  # type: ignore[method-assign]


def run_once(target: str, cycles: int, workers: int | None = None) -> dict[str, Any]:
    """Run the trader in this process: what one bench run measures."""
    trader = load_trader(target, workers=workers is not None)
    with _watching() as watched:
        start = time.perf_counter()
        decisions = list(trader(cycles) if workers is None else trader(cycles, workers))
        end = time.perf_counter()
    wall = end - start
    # A trader that never calls Plugins.scan: its start-up counts in its cycles
    begun = start if watched.first_scan is None else watched.first_scan
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {
        "wall_s": wall,
        "startup_s": begun - start,
        "seconds_per_cycle": (end - begun) / cycles,
        "peak_rss_mb": peak / 2**20,
        "decisions": len(decisions),
        "decisions_digest": decisions_digest(decisions),
        "summaries": watched.summaries,
        "step_asides": watched.step_asides,
    }


def _run_child(
    target: str,
    cycles: int,
    workers: int | None,
    plugins: str,
    out: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    command = [sys.executable, "-m", __name__, target, "--cycles", str(cycles), "--out", str(out)]
    if workers is not None:
        command += ["--workers", str(workers)]
    done = subprocess.run(
        command, env={**env, ENV_PLUGINS: plugins}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        at = "" if workers is None else f" at {_count(workers)}"
        raise TraderBenchError(
            f"the run with plugins {plugins or 'none'!r}{at} failed:\n{done.stderr[-4000:]}"
        )
    return json.loads(out.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _nothing() -> None:
    pass


def _count(workers: int) -> str:
    return f"{workers} worker" + ("" if workers == 1 else "s")


def _rotated(items: Sequence[Any], turn: int) -> list[Any]:
    turn %= len(items)
    return [*items[turn:], *items[:turn]]


def schedule(counts: Sequence[Any], sets: Sequence[Any], repeats: int) -> list[tuple[Any, Any]]:
    """The order of the runs: ``(count, set)`` pairs, every pair once per repeat. Repeat
    ``r`` starts at count ``r`` and, within each count, at set ``r`` (modulo), so no count
    and no set always runs first."""
    return [
        (count, name)
        for repeat in range(repeats)
        for count in _rotated(counts, repeat)
        for name in _rotated(sets, repeat)
    ]


def bench_trader(
    target: str,
    sets: str = DEFAULT_SETS,
    repeats: int = 3,
    cycles: int = 10,
    progress: TextIO | None = None,
    *,
    workers: Sequence[int] | None = None,
    redis: bool = False,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every installed set of ``sets`` ``repeats`` times on the trader ``target``.

    :param workers: call ``FUNCTION(cycles, workers)`` with each of these counts (``None``:
        ``FUNCTION(cycles)``).
    :param redis: give every run a private, emptied Redis (``ENV_SHARED_URL``).
    :param command: the command line to record (default: this process's).
    :return: the JSON of the module's docstring.
    :raises TraderBenchError: the trader cannot be imported or takes no workers argument,
        ``redis-server`` cannot start, or a run failed.
    """
    load_trader(target, workers=workers is not None)  # a wrong name fails before any run
    progress = progress or sys.stderr
    chosen = []
    for name, plugins in resolve_sets(sets, installed_names()):
        if plugins is None:
            print(f"skipping set {name!r}: its plugins are not installed", file=progress)
        else:
            chosen.append((name, plugins))
    if not chosen:
        raise TraderBenchError(f"no set of {sets!r} can run")
    counts: list[int | None] = list(workers) if workers is not None else [None]
    if not counts:
        raise TraderBenchError("--workers names no worker count")
    runs: dict[int | None, dict[str, list[dict[str, Any]]]] = {
        count: {name: [] for name, _ in chosen} for count in counts
    }
    order = schedule(counts, chosen, repeats)
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sltrader-trader-bench-"))
        )
        env = dict(os.environ)
        flush: Callable[[], None] = _nothing  # without --redis: nothing to empty
        if redis:
            url, flush = stack.enter_context(private_redis(tmp))
            env[ENV_SHARED_URL] = url
            print(f"redis-server at {url}, emptied before every run", file=progress)
        for done, (count, (name, plugins)) in enumerate(order, 1):
            flush()
            out = tmp / f"{done}.json"
            run = _run_child(target, cycles, count, plugins, out, env)
            runs[count][name].append(run)
            at = "" if count is None else f"{_count(count)}, "
            print(
                f"[{done}/{len(order)}] {at}{name}: {run['seconds_per_cycle'] * 1000:.1f} ms/cycle",
                file=progress,
            )
    result: dict[str, Any] = {
        "trader": target,
        "command": list(sys.argv if command is None else command),
        "machine": machine(),
        "cycles": cycles,
        "repeats": repeats,
        "redis": redis,
    }
    if workers is None:
        result.update(python=sys.version.split()[0], sets=_summaries(runs[None]), runs=runs[None])
    else:
        result["workers"] = {
            str(count): {"sets": _summaries(runs[count]), "runs": runs[count]} for count in counts
        }
    return result


@contextlib.contextmanager
def private_redis(tmp: Path, needs: str = "--redis") -> Iterator[tuple[str, Callable[[], None]]]:
    """A ``redis-server`` of ``PATH`` on a free localhost port, nothing saved (its files
    in ``tmp``); yields its URL and a function that empties it. Stopped on leaving, on
    an error too.

    :param needs: what needs it, for the message when it is missing.
    :raises TraderBenchError: it is not on ``PATH``, or does not answer.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise TraderBenchError(
            f"{needs} needs redis-server on PATH: install Redis (apt-get install "
            "redis-server, brew install redis)"
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = tmp / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp), "--logfile", str(log)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REDIS_START_S
        while _redis_call(port, "PING") != "+PONG":
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
                raise TraderBenchError(f"redis-server did not start on port {port}:\n{tail}")
            time.sleep(0.02)

        def flush() -> None:
            if (answer := _redis_call(port, "FLUSHALL")) != "+OK":
                raise TraderBenchError(f"redis-server on port {port}: FLUSHALL: {answer}")

        yield f"redis://127.0.0.1:{port}/0", flush
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _redis_call(port: int, command: str) -> str:
    """A one-word command's one-line answer (``+PONG``), or the error that stopped it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(f"*1\r\n${len(command)}\r\n{command}\r\n".encode())
            return connection.makefile("rb").readline().decode(errors="replace").strip()
    except OSError as exc:
        return str(exc)


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
        if all("startup_s" in r for r in rows):  # not in a bench of before it was measured
            summary["startup_s"] = statistics.median(r["startup_s"] for r in rows)
        if base is not None:
            summary["time_ratio"] = summary["seconds_per_cycle"] / statistics.median(
                r["seconds_per_cycle"] for r in base
            )
            if "startup_s" in summary and all("startup_s" in r for r in base):
                summary["startup_extra_s"] = summary["startup_s"] - statistics.median(
                    r["startup_s"] for r in base
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


def _groups(result: dict[str, Any]) -> list[tuple[int | None, dict[str, dict[str, Any]]]]:
    """``(workers count, summaries by set)``: one group per count, or one without."""
    if "workers" in result:
        return [(int(count), entry["sets"]) for count, entry in result["workers"].items()]
    return [(None, result["sets"])]


def _runs(result: dict[str, Any]) -> dict[int | None, dict[str, list[dict[str, Any]]]]:
    """Every run by workers count (``None`` without ``--workers``), then by set (empty
    where the JSON kept no runs)."""
    if "workers" in result:
        return {int(c): entry.get("runs", {}) for c, entry in result["workers"].items()}
    return {None: result.get("runs", {})}


#: The share of a time ratio's bootstrap resamples its interval spans, and their number.
INTERVAL = 0.9
RESAMPLES = 2000


def ratio_interval(times: Sequence[float], base: Sequence[float]) -> tuple[float, float]:
    """The :data:`INTERVAL` bootstrap interval of ``median(times) / median(base)``: how far
    the repeats' spread leaves the ratio open. Each resample draws both with replacement;
    the draws are seeded, so one JSON always gives one text."""
    draw = random.Random(0)
    ratios = sorted(
        statistics.median(draw.choices(times, k=len(times)))
        / statistics.median(draw.choices(base, k=len(base)))
        for _ in range(RESAMPLES)
    )
    tail = round((1 - INTERVAL) / 2 * RESAMPLES)
    return ratios[tail], ratios[-1 - tail]


#: Every set's time per cycle at most this times none's (the noise of a shared machine);
#: ``all`` at most the best set's plus COMPANY.
NOISE = 1.02
COMPANY = 0.03


def unpaid(result: dict[str, Any]) -> list[str]:
    """Where a set costs more than :data:`NOISE` of ``none``, or ``all`` more than the best
    set + :data:`COMPANY`, at each workers count (with the ratio's
    :func:`ratio_interval` where the runs are kept): empty when every plugin paid or
    stepped aside."""
    found = []
    runs = _runs(result)
    for count, sets in _groups(result):
        at = "" if count is None else f" at {_count(count)}"
        times = {n: [r["seconds_per_cycle"] for r in rows] for n, rows in runs[count].items()}
        ratios = {
            n: s["time_ratio"]
            for n, s in sets.items()
            if "time_ratio" in s and n not in ("none", CONTROL)
        }
        for name, ratio in ratios.items():
            if ratio <= NOISE:
                continue
            spread = ""
            if len(times.get(name, ())) > 1 and len(times.get("none", ())) > 1:
                low, high = ratio_interval(times[name], times["none"])
                spread = f" ({INTERVAL:.0%} interval x{low:.2f}-x{high:.2f})"
            found.append(f"{name} x{ratio:.2f}{spread}{at}")
        singles = [r for n, r in ratios.items() if n != "all"]
        if "all" in ratios and singles and ratios["all"] > min(singles) + COMPANY:
            found.append(f"all x{ratios['all']:.2f} against the best set's x{min(singles):.2f}{at}")
    return found


def _machine_text(result: dict[str, Any]) -> str | None:
    found = result.get("machine")
    if not found:
        return None
    return f"{found['platform']}, {found['cpus']} CPUs, Python {found['python']}"


def format_table(result: dict[str, Any]) -> str:
    """The bench as a text table: medians, and ratios to ``none`` where it ran (a table
    per workers count with ``--workers``)."""
    head = (
        f"{result['trader']}: {result['cycles']} cycles, median of {result['repeats']} "
        "runs per set (ratio: against none; lower is better)"
    )
    lines = [head]
    for count, sets in _groups(result):
        label = "set" if count is None else _count(count)
        lines.append(
            f"{label:<24} {'ms/cycle':>10} {'x none':>7} {'start s':>8} {'peak MB':>8} "
            f"{'x none':>7}"
        )
        for name, s in sets.items():
            time_ratio = f"x{s['time_ratio']:.2f}" if "time_ratio" in s else "-"
            rss_ratio = f"x{s['rss_ratio']:.2f}" if "rss_ratio" in s else "-"
            startup = f"{s['startup_s']:.2f}" if "startup_s" in s else "-"
            lines.append(
                f"{name:<24} {s['seconds_per_cycle'] * 1000:>10.1f} {time_ratio:>7} "
                f"{startup:>8} {s['peak_rss_mb']:>8.1f} {rss_ratio:>7}"
            )
        at = "" if count is None else f" at {_count(count)}"
        differ = [n for n, s in sets.items() if s.get("same_decisions") is False]
        if differ:
            lines.append(f"DECISIONS DIFFER from none's{at}: {', '.join(differ)}")
        elif "none" in sets and not any(s["decisions"] for s in sets.values()):
            lines.append(f"decisions{at}: none made, nothing to compare (more cycles?)")
        elif "none" in sets:
            lines.append(f"decisions{at}: every set decided as none did")
    if (text := _machine_text(result)) is not None:
        lines.append(f"machine: {text}")
    return "\n".join(lines)


def format_markdown(result: dict[str, Any]) -> str:
    """The bench as Markdown: a row per set (``none`` first), a column per workers count
    (ascending), each cell the set's time per cycle against ``none``'s at that count; then
    whether every set decided as ``none`` did (or which differed, at which count),
    ``none``'s own time per cycle, the command and the machine.

    The same JSON gives the same text, byte for byte.
    """
    groups = sorted(_groups(result), key=lambda group: group[0] or 0)
    names = ["none"]  # first, then the others as the JSON has them
    for _, sets in groups:
        names += [name for name in sets if name not in names]
    if not any("none" in sets for _, sets in groups):
        names.remove("none")
    columns = [("x none" if count is None else _count(count)) for count, _ in groups]
    lines = [
        f"`{result['trader']}`: {result['cycles']} cycles, median of {result['repeats']} "
        "runs; time per cycle against `none` at the same workers count (lower is faster)",
        "",
        "| set | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name in names:
        cells = []
        for _, sets in groups:
            ratio = sets.get(name, {}).get("time_ratio")
            cells.append("-" if ratio is None else f"x{ratio:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if any("startup_extra_s" in s for _, sets in groups for s in sets.values()):
        lines += [
            "",
            "Start-up (before the first scan) against `none`'s, once per run:",
            "",
            "| set | " + " | ".join("start-up" if c == "x none" else c for c in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        for name in names:
            cells = []
            for _, sets in groups:
                extra = sets.get(name, {}).get("startup_extra_s")
                cells.append("-" if extra is None else f"{extra * 1000:+.0f} ms")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _step_aside_table(result, names, columns)
    lines.append("")
    differ = [
        name if count is None else f"{name} at {_count(count)}"
        for count, sets in groups
        for name, s in sets.items()
        if s.get("same_decisions") is False
    ]
    if differ:
        lines.append(f"Decisions: DIFFER from none's: {', '.join(differ)}.")
    elif not any(s["decisions"] for _, sets in groups for s in sets.values()):
        lines.append("Decisions: none made, nothing to compare.")
    elif all("none" in sets for _, sets in groups):
        lines.append("Decisions: every set decided as none did.")
    else:
        lines.append("Decisions: not compared (the set none did not run).")
    costs = unpaid(result)
    lines.append(
        f"Every set at most x{NOISE:.2f} of none, all within {COMPANY} of the best set: "
        + (f"no: {'; '.join(costs)}." if costs else "yes.")
    )
    control = [
        f"x{sets[CONTROL]['time_ratio']:.2f}" + ("" if count is None else f" at {_count(count)}")
        for count, sets in groups
        if "time_ratio" in sets.get(CONTROL, {})
    ]
    if control:
        lines.append(
            f"The control, none run again in every repeat (an A/A test), read {', '.join(control)}:"
            " a ratio within that distance of x1.00 is this machine's noise, no cost nor gain."
        )
    base = [
        f"{sets['none']['seconds_per_cycle'] * 1000:.1f} ms"
        + (f" (start-up {sets['none']['startup_s']:.2f} s)" if "startup_s" in sets["none"] else "")
        + ("" if count is None else f" at {_count(count)}")
        for count, sets in groups
        if "none" in sets
    ]
    if base:
        lines.append(f"none per cycle: {', '.join(base)}.")
    if result.get("command"):
        lines.append(f"Command: `{shlex.join(result['command'])}`")
    if (text := _machine_text(result)) is not None:
        lines.append(f"Machine: {text}.")
    return "\n".join(lines) + "\n"


def _step_aside_table(result: dict[str, Any], names: list[str], columns: list[str]) -> list[str]:
    """Markdown lines: for each plugin of each set that trials its payoff, in how many of
    the set's runs it stepped aside at least once (none when no run recorded it)."""
    by_count = _runs(result)
    groups = [by_count[count] for count in sorted(by_count, key=lambda count: count or 0)]
    rows = []
    for name in names:
        runs_by_count = [runs.get(name, []) for runs in groups]
        plugins = {p for runs in runs_by_count for run in runs for p in run.get("step_asides", {})}
        for plugin in sorted(plugins):
            cells = [
                f"{sum(run['step_asides'].get(plugin, 0) > 0 for run in runs)}/{len(runs)}"
                if runs
                else "-"
                for runs in runs_by_count
            ]
            label = plugin if plugin == name else f"{plugin} in {name}"
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "",
        "Runs in which a plugin stepped aside (its work did not pay) at least once:",
        "",
        "| plugin | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *rows,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """One run in this process (what the bench starts):
    ``TARGET --cycles N --out PATH [--workers W]``."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    parser.add_argument("target", help="MODULE:FUNCTION")
    parser.add_argument("--cycles", type=int, required=True)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run = run_once(args.target, args.cycles, args.workers)
    args.out.write_text(json.dumps(run), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
