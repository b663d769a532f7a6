"""``sltrader bench --trader``: the plugin sets on a trader of one's own, in fresh processes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import textwrap
from pathlib import Path

import pytest

from sltrader_plugins.bench.trader import (
    ENV_SHARED_URL,
    TraderBenchError,
    _summaries,
    bench_trader,
    decisions_digest,
    format_markdown,
    format_table,
    installed_names,
    load_trader,
    parse_workers,
    ratio_interval,
    resolve_sets,
    schedule,
    unpaid,
)
from sltrader_plugins.cli import main as sltrader

SAVED_REFERENCE_BENCH = Path(__file__).parent / "host" / "data" / "bench-small.json"

# A trader of its own: public pieces only, its plugins loaded as it always loads them.
TRADER = textwrap.dedent(
    """
    import json
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from sltrader_plugins import Klines, ModelAdapter, Plugins, Signal, SingleFlightCache

    SYMBOLS = ["BTC/USDT", "ETH_USDT", "SOL-USD", "XRP/USDT"]


    class Clock:
        def __init__(self):
            self.t = 86400.0 * 100

        def now(self):
            return self.t


    class Proba:
        def predict_proba(self, x):
            p = 1.0 / (1.0 + np.exp(-x.sum(axis=1)))
            return np.column_stack([1.0 - p, p])


    def fetch_for(clock):
        def fetch(symbol, timeframe, limit):
            step = 60.0
            last = clock.now() // step * step
            opens = last - step * np.arange(limit, 0, -1)
            seed = sum(map(ord, symbol))
            close = 100.0 + np.sin(opens / 3600.0 + seed)
            return Klines(symbol, timeframe, opens, close, close + 1, close - 1, close, close)

        return fetch


    def cycles(count):
        return threaded(count, 2)[:-1]


    def threaded(count, workers):
        # cycles() on `workers` threads; the count is its last decision (so two counts
        # decide differently: only runs at one count are compared)
        clock = Clock()
        plugins = Plugins.load()
        cache = SingleFlightCache(plugins.fetching(fetch_for(clock)), clock, 16, "1m")
        model = ModelAdapter(Proba())
        decisions = []
        with plugins, ThreadPoolExecutor(workers) as pool:
            plugins.start(
                model=model, cache=cache, clock=clock, base_timeframe="1m", workers=workers
            )

            def analyze(symbol):
                with plugins.analyzing(symbol):
                    k = cache.get_klines(symbol, "1m")

                    def compute(buffers):
                        r = buffers.empty(k.n - 1)
                        np.divide(k.close[1:], k.close[:-1], out=r)
                        return np.array([r[-1] - 1.0, r[-5:].mean() - 1.0]) * 100

                    features = plugins.build_features(symbol, "1m", k.n, compute)
                    return symbol, plugins.predict(symbol, features)

            for _ in range(count):
                clock.t += 60.0
                plugins.candle_closes()
                with plugins.scan(SYMBOLS):
                    results = list(pool.map(analyze, SYMBOLS))
                for symbol, p in results:
                    if abs(p - 0.5) > 0.001:
                        side = "buy" if p > 0.5 else "sell"
                        plugins.signal(Signal(symbol, "1m", side, p, clock.now()))
                        decisions.append([clock.now(), symbol, side])
        return [*decisions, ["workers", workers]]


    def slow_start(count):
        # a start-up of 0.3 s (a model trained, say), then cycles of 0.01 s
        import time

        time.sleep(0.3)
        plugins = Plugins.load()
        with plugins:
            plugins.start(
                model=ModelAdapter(Proba()),
                cache=SingleFlightCache(fetch_for(Clock()), Clock(), 16, "1m"),
                clock=Clock(),
                base_timeframe="1m",
                workers=1,
            )
            for _ in range(count):
                with plugins.scan(SYMBOLS):
                    time.sleep(0.01)
        return [count]


    def broken(count, workers=1):
        raise RuntimeError("the trader broke")


    def never_scans(count):
        # decides without ever calling plugins.scan
        return list(range(count))


    def redis_call(url, *words):
        # one command to the Redis of `url` (no client library: the core has none)
        host, _, port = url.split("/")[2].partition(":")
        with socket.create_connection((host, int(port)), timeout=5) as connection:
            parts = "".join(f"${len(w)}\\r\\n{w}\\r\\n" for w in words)
            connection.sendall(f"*{len(words)}\\r\\n{parts}".encode())
            return connection.makefile("rb").readline().decode().strip()


    def shared_probe(count, workers=1):
        # what the plugins of this run are given and find, written to probe.jsonl
        plugins = Plugins.load()
        url = plugins.config.plugin("shared").get("url")
        found = redis_call(url, "DBSIZE")  # an earlier run's keys, if it was not emptied
        clock = Clock()
        cache = SingleFlightCache(plugins.fetching(fetch_for(clock)), clock, 16, "1m")
        with plugins:
            plugins.start(
                model=ModelAdapter(Proba()),
                cache=cache,
                clock=clock,
                base_timeframe="1m",
                workers=workers,
            )
            with plugins.scan(SYMBOLS):
                for symbol in SYMBOLS:
                    cache.get_klines(symbol, "1m")
            written = redis_call(url, "DBSIZE")  # what the plugins wrote
            active = plugins.active()
        redis_call(url, "SET", "left-by-a-run", "1")
        line = {"url": url, "found": found, "written": written, "active": active}
        with open("probe.jsonl", "a") as probe:
            probe.write(json.dumps(line) + "\\n")
        return [url, found]
    """
)


@pytest.fixture
def trader(tmp_path, monkeypatch):
    """``mytrader`` importable here and in the bench's processes (they start in the cwd)."""
    (tmp_path / "mytrader.py").write_text(TRADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "mytrader:cycles"


def test_every_installed_set_runs_and_decides_as_none(trader):
    installed = installed_names()
    sets = "none,all" if installed else "none"
    result = bench_trader(trader, sets, repeats=2, cycles=4)
    names = ["none", "all"] if installed else ["none"]
    assert list(result["sets"]) == names and result["cycles"] == 4
    for name in names:
        summary = result["sets"][name]
        assert summary["same_decisions"] is True, name
        assert summary["decisions"] > 0 and summary["seconds_per_cycle"] > 0
        assert summary["peak_rss_mb"] > 10
        assert len(result["runs"][name]) == 2
    assert result["sets"]["none"]["time_ratio"] == 1.0
    assert "every set decided as none did" in format_table(result)
    for run in result["runs"]["none"]:
        assert run["summaries"] == {} and run["step_asides"] == {}
    for run in result["runs"].get("all", []):  # what each plugin bought, read at close
        assert sorted(run["summaries"]) == installed
        assert all(isinstance(line, str) and line for line in run["summaries"].values())
        # every plugin that trials its payoff says how often it stepped aside
        assert set(run["step_asides"]) <= set(installed) and run["step_asides"]
        assert all(count >= 0 for count in run["step_asides"].values())
    json.dumps(result)  # what --json writes


def test_start_up_is_measured_apart_from_the_cycles(trader):
    """Time per cycle counts from the first scan: a start-up of 0.3 s spread over 5 cycles
    would make each 0.07 s, not 0.01."""
    result = bench_trader("mytrader:slow_start", "none", repeats=1, cycles=5)
    (run,) = result["runs"]["none"]
    assert run["startup_s"] >= 0.3 and run["wall_s"] >= 0.35
    assert 0.01 <= run["seconds_per_cycle"] < 0.05
    assert result["sets"]["none"]["startup_extra_s"] == 0.0
    text = format_markdown(result)
    assert "Start-up (before the first scan) against `none`'s" in text
    assert "| none | +0 ms |" in text and "(start-up 0.3" in text


def test_a_trader_that_never_scans_counts_its_start_up_in_its_cycles(trader):
    result = bench_trader("mytrader:never_scans", "none", repeats=1, cycles=2)
    (run,) = result["runs"]["none"]
    assert run["startup_s"] == 0.0
    assert run["seconds_per_cycle"] == pytest.approx(run["wall_s"] / 2)


def test_sets_whose_plugins_are_not_installed_are_skipped_and_said_so(trader, capsys):
    result = bench_trader(trader, "none,nosuch", repeats=1, cycles=1)
    assert list(result["sets"]) == ["none"]
    assert "skipping set 'nosuch'" in capsys.readouterr().err


def test_a_set_that_decides_differently_is_named():
    def run(digest: str, seconds: float) -> dict:
        return {
            "seconds_per_cycle": seconds,
            "peak_rss_mb": 100.0,
            "decisions": 3,
            "decisions_digest": digest,
        }

    runs = {"none": [run("a", 1.0), run("a", 1.2)], "warming": [run("a", 0.5), run("b", 0.7)]}
    summaries = _summaries(runs)
    assert summaries["warming"]["same_decisions"] is False
    assert summaries["warming"]["time_ratio"] == pytest.approx(0.6 / 1.1)
    table = format_table({"trader": "t:f", "cycles": 1, "repeats": 2, "sets": summaries})
    assert "DECISIONS DIFFER from none's: warming" in table


def test_decisions_digest_is_of_the_decisions_not_their_order_of_keys():
    assert decisions_digest([{"a": 1, "b": 2}]) == decisions_digest([{"b": 2, "a": 1}])
    assert decisions_digest([1, 2]) != decisions_digest([2, 1])


@pytest.mark.parametrize(
    "target, message",
    [
        ("mytrader", "expected MODULE:FUNCTION"),
        ("nosuchmodule:cycles", "cannot import nosuchmodule"),
        ("mytrader:nosuch", "has no function 'nosuch'"),
    ],
)
def test_a_trader_that_cannot_be_found_is_one_clear_error(trader, target, message):
    with pytest.raises(TraderBenchError, match=message):
        load_trader(target)


def test_a_trader_that_fails_is_an_error_with_its_output(trader):
    with pytest.raises(TraderBenchError, match="the trader broke"):
        bench_trader("mytrader:broken", "none", repeats=1, cycles=1)


def test_the_command_prints_the_table_and_writes_json(trader, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "--trader", trader, "--sets", "none", "--repeats", "1", "--cycles", "2"]
    assert sltrader([*args, "--json", str(out)]) == 0
    assert "ms/cycle" in capsys.readouterr().out
    assert json.loads(out.read_text())["sets"]["none"]["same_decisions"] is True
    assert sltrader([*args, "--traders", "2"]) == 2
    assert "--traders does not apply with --trader" in capsys.readouterr().err
    assert sltrader(["bench", "--trader", "mytrader:nosuch"]) == 2


@pytest.mark.parametrize(
    "option",
    [
        ["--size", "full"],
        ["--model", "cheap"],
        ["--seed", "3"],
        ["--seed", "0"],
        ["--latency", "wan"],
        ["--plugins", "batching"],
        ["--config", "sltrader.toml"],
        ["--strict"],
        ["--plot", "bench.png"],
        ["--speed", "2"],
    ],
)
def test_an_option_of_the_reference_workload_is_refused_with_a_trader(trader, option, capsys):
    # Silently ignored, it would bench another trader than the user meant.
    assert sltrader(["bench", "--trader", trader, "--cycles", "1", *option]) == 2
    assert f"{option[0]} does not apply with --trader" in capsys.readouterr().err


def test_resolve_sets():
    assert resolve_sets("none,all,a+b,c,control", ["a", "b"]) == [
        ("none", ""),
        ("all", "a,b"),
        ("a+b", "a,b"),
        ("c", None),
        ("control", ""),  # none again, under its own name
    ]


# -- --workers ---------------------------------------------------------------------------


def test_the_schedule_runs_every_pair_once_per_repeat_and_rotates_counts_and_sets():
    order = schedule([1, 4], ["none", "all", "warming"], repeats=3)
    repeats = [order[i : i + 6] for i in range(0, 18, 6)]
    for pairs in repeats:
        assert sorted(pairs) == sorted((c, s) for c in (1, 4) for s in ("none", "all", "warming"))
    assert [pairs[0] for pairs in repeats] == [(1, "none"), (4, "all"), (1, "warming")]
    # within a count, each set runs first in its turn
    assert [pairs[3][1] for pairs in repeats] == ["none", "all", "warming"]
    assert schedule([None], ["none", "all"], 2) == [
        (None, "none"),
        (None, "all"),
        (None, "all"),
        (None, "none"),
    ]


def test_with_workers_every_count_is_its_own_bench(trader):
    sets = "none,all" if installed_names() else "none"
    progress = io.StringIO()
    result = bench_trader(
        "mytrader:threaded", sets, repeats=2, cycles=3, workers=[1, 3], progress=progress
    )
    names = sets.split(",")
    assert list(result["workers"]) == ["1", "3"]
    assert "sets" not in result and "runs" not in result
    assert result["machine"]["cpus"] >= 1 and result["machine"]["python"]
    assert result["machine"]["platform"] and isinstance(result["command"], list)
    digests = {}
    for count, entry in result["workers"].items():
        assert list(entry["sets"]) == names
        for name in names:
            summary = entry["sets"][name]
            assert summary["same_decisions"] is True, (count, name)
            assert summary["time_ratio"] > 0 and summary["rss_ratio"] > 0
            assert summary["seconds_per_cycle"] > 0 and summary["peak_rss_mb"] > 10
            assert len(entry["runs"][name]) == 2
        assert entry["sets"]["none"]["time_ratio"] == 1.0
        digests[count] = entry["runs"]["none"][0]["decisions_digest"]
    # the trader's decisions name its count: equal within a count, compared only there
    assert digests["1"] != digests["3"]
    lines = progress.getvalue().splitlines()
    assert len(lines) == 2 * 2 * len(names)
    assert lines[0].startswith(f"[1/{len(lines)}] 1 worker, none: ")
    second = lines[len(lines) // 2]  # the second repeat: the other count, the other set first
    assert second.startswith(f"[{len(lines) // 2 + 1}/{len(lines)}] 3 workers, {names[-1]}: ")
    text = format_table(result)
    assert "decisions at 1 worker: every set decided as none did" in text
    assert "decisions at 3 workers: every set decided as none did" in text
    json.dumps(result)


def test_a_function_without_a_workers_argument_is_one_clear_error(trader, capsys):
    with pytest.raises(TraderBenchError, match=r"cycles\(\) takes no workers argument"):
        bench_trader("mytrader:cycles", "none", repeats=1, cycles=1, workers=[2])
    assert sltrader(["bench", "--trader", "mytrader:cycles", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert (
        "takes no workers argument; with --workers the bench calls cycles(cycles, workers)" in err
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,x", "expected worker counts joined by commas (e.g. 1,4,8,16), got '1,x'"),
        ("1,,4", "expected worker counts joined by commas (e.g. 1,4,8,16), got '1,,4'"),
        ("", "expected worker counts joined by commas (e.g. 1,4,8,16), got ''"),
        ("4,0", "a worker count must be at least 1, got 0"),
        ("4,1,4", "worker count 4 given twice in '4,1,4'"),
    ],
)
def test_bad_workers_text_is_refused_in_one_line(trader, capsys, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_workers(text)
    with pytest.raises(SystemExit) as exit_:
        sltrader(["bench", "--trader", "mytrader:threaded", "--workers", text])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument --workers: {message}")
    )


def test_parse_workers_keeps_the_order_given():
    assert parse_workers("16, 1,4") == [16, 1, 4]


def test_several_counts_and_redis_are_for_the_trader_bench_only(capsys):
    assert sltrader(["bench", "--workers", "1,4", "--plugins", ""]) == 2
    assert sltrader(["bench", "--redis", "--plugins", ""]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "sltrader: error: --workers takes one count (several: with --trader)",
        "sltrader: error: --redis applies with --trader only",
    ]


# -- the command and its report ----------------------------------------------------------


def test_the_command_with_workers_writes_json_that_report_renders(trader, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--trader", "mytrader:threaded", "--workers", "2,1", "--sets", "none"]
    argv += ["--repeats", "1", "--cycles", "2", "--json", str(out)]
    assert sltrader(argv) == 0
    table = capsys.readouterr().out
    assert "2 workers" in table and "1 worker " in table and "machine: " in table
    result = json.loads(out.read_text())
    assert result["command"] == ["sltrader", *argv]
    assert list(result["workers"]) == ["2", "1"]  # as given: --json does not sort them
    assert sltrader(["report", str(out), "--markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "| set | 1 worker | 2 workers |\n|---|---:|---:|\n| none | x1.00 | x1.00 |\n" in markdown
    assert "Decisions: every set decided as none did." in markdown
    assert "Command: `sltrader bench --trader mytrader:threaded --workers 2,1" in markdown
    assert sltrader(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == format_table(result)
    assert sltrader(["report", str(out), "--plot", str(tmp_path / "x.png")]) == 2
    assert "--plot draws a reference bench, not --trader" in capsys.readouterr().err


def test_markdown_of_the_reference_bench_is_refused_and_its_report_still_works(capsys):
    assert sltrader(["report", str(SAVED_REFERENCE_BENCH), "--markdown"]) == 2
    assert "--markdown renders a trader bench" in capsys.readouterr().err
    assert sltrader(["report", str(SAVED_REFERENCE_BENCH)]) == 0
    assert "decisions digest" in capsys.readouterr().out


def _summary(name: str, ms: float, ratio: float, same: bool = True) -> dict:
    return {
        "plugins": name,
        "seconds_per_cycle": ms / 1000,
        "peak_rss_mb": 120.0,
        "decisions": 40,
        "time_ratio": ratio,
        "rss_ratio": 1.01,
        "same_decisions": same,
    }


#: A saved bench with workers, its counts in the order ``json.dumps(sort_keys=True)``
#: leaves them ("16" before "4").
FIXTURE = {
    "trader": "mybot.bench:cycles",
    "command": ["sltrader", "bench", "--trader", "mybot.bench:cycles", "--workers", "1,4,16"],
    "machine": {"platform": "Linux-6.8.0-x86_64-with-glibc2.39", "cpus": 8, "python": "3.12.3"},
    "cycles": 120,
    "repeats": 3,
    "redis": False,
    "workers": {
        "1": {"sets": {"none": _summary("none", 250.0, 1.0), "all": _summary("all", 230, 0.914)}},
        "16": {
            "sets": {"none": _summary("none", 40.0, 1.0), "all": _summary("all", 30.0, 0.75)},
        },
        "4": {
            "sets": {
                "none": _summary("none", 80.0, 1.0),
                "all": _summary("all", 70.0, 0.87499),
                "warming": _summary("warming", 79.0, 0.9875),
            },
        },
    },
}

FIXTURE_MARKDOWN = """\
`mybot.bench:cycles`: 120 cycles, median of 3 runs; time per cycle against `none` at the \
same workers count (lower is faster)

| set | 1 worker | 4 workers | 16 workers |
|---|---:|---:|---:|
| none | x1.00 | x1.00 | x1.00 |
| all | x0.91 | x0.87 | x0.75 |
| warming | - | x0.99 | - |

Decisions: every set decided as none did.
Every set at most x1.02 of none, all within 0.03 of the best set: yes.
none per cycle: 250.0 ms at 1 worker, 80.0 ms at 4 workers, 40.0 ms at 16 workers.
Command: `sltrader bench --trader mybot.bench:cycles --workers 1,4,16`
Machine: Linux-6.8.0-x86_64-with-glibc2.39, 8 CPUs, Python 3.12.3.
"""


def test_report_markdown_renders_a_saved_bench_exactly(tmp_path, capsys):
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(FIXTURE, indent=2, sort_keys=True))
    assert sltrader(["report", str(saved), "--markdown"]) == 0
    assert capsys.readouterr().out == FIXTURE_MARKDOWN
    assert format_markdown(FIXTURE) == FIXTURE_MARKDOWN


def test_markdown_names_every_set_that_decided_differently_and_at_which_count():
    result = json.loads(json.dumps(FIXTURE))
    result["workers"]["4"]["sets"]["warming"]["same_decisions"] = False
    result["workers"]["16"]["sets"]["none"]["same_decisions"] = False
    text = format_markdown(result)
    assert "Decisions: DIFFER from none's: warming at 4 workers, none at 16 workers." in text
    for sets in result["workers"].values():
        for summary in sets["sets"].values():
            summary.update(decisions=0, same_decisions=True)
    assert "Decisions: none made, nothing to compare." in format_markdown(result)
    assert "decisions at 4 workers: none made, nothing to compare" in format_table(result)
    legacy = {**FIXTURE, "sets": FIXTURE["workers"]["4"]["sets"]}
    del legacy["workers"]
    assert "| set | x none |\n|---|---:|\n| none | x1.00 |\n| all | x0.87 |" in (
        format_markdown(legacy)
    )


def test_a_set_that_costs_or_an_all_behind_the_best_set_is_named():
    result = json.loads(json.dumps(FIXTURE))
    sets = result["workers"]["4"]["sets"]
    sets["warming"]["time_ratio"] = 1.021  # beyond the noise
    sets["batching"] = _summary("batching", 60.0, 0.75)  # all (x0.87) is 0.12 behind it
    assert unpaid(result) == [
        "warming x1.02 at 4 workers",
        "all x0.87 against the best set's x0.75 at 4 workers",
    ]
    assert "within 0.03 of the best set: no: warming x1.02 at 4 workers; all x0.87" in (
        format_markdown(result)
    )
    sets["warming"]["time_ratio"] = 1.02  # the noise allowed
    sets["batching"]["time_ratio"] = 0.85  # all within 0.03 of it
    assert unpaid(result) == []


def test_a_cost_is_given_with_the_interval_the_runs_leave_it():
    result = json.loads(json.dumps(FIXTURE))
    base = [0.080, 0.078, 0.084, 0.081, 0.079]
    spread = [0.090, 0.076, 0.086, 0.084, 0.079]  # median 0.084: x1.04 of 0.081
    result["workers"]["4"]["runs"] = {
        "none": [{"seconds_per_cycle": t} for t in base],
        "warming": [{"seconds_per_cycle": t} for t in spread],
    }
    result["workers"]["4"]["sets"]["warming"]["time_ratio"] = 0.084 / 0.081
    low, high = ratio_interval(spread, base)
    assert low < 1.0 < 0.084 / 0.081 < high  # this cost is within what the runs leave open
    assert unpaid(result) == [f"warming x1.04 (90% interval x{low:.2f}-x{high:.2f}) at 4 workers"]
    assert ratio_interval(spread, base) == (low, high)  # seeded: one JSON, one text
    assert ratio_interval([2.0, 2.0], [1.0, 1.0]) == (2.0, 2.0)


def test_the_control_is_read_as_noise_never_as_a_cost_nor_as_the_best_set():
    result = json.loads(json.dumps(FIXTURE))
    for count, ratio in (("1", 1.04), ("4", 0.6), ("16", 0.97)):
        result["workers"][count]["sets"]["control"] = _summary("control", 1.0, ratio)
    assert unpaid(result) == []  # not x1.04 at 1 worker, nor all against x0.60 at 4
    markdown = format_markdown(result)
    assert "| control | x1.04 | x0.60 | x0.97 |" in markdown
    assert (
        "The control, none run again in every repeat (an A/A test), read x1.04 at 1 worker, "
        "x0.60 at 4 workers, x0.97 at 16 workers:"
    ) in markdown
    assert "The control" not in FIXTURE_MARKDOWN


def test_markdown_counts_the_runs_in_which_each_plugin_stepped_aside():
    result = json.loads(json.dumps(FIXTURE))

    def runs(*asides: dict) -> list[dict]:
        return [{"seconds_per_cycle": 0.08, "step_asides": aside} for aside in asides]

    result["workers"]["1"]["runs"] = {"none": runs({}, {}), "all": runs({"warming": 0}, {})}
    result["workers"]["4"]["runs"] = {
        "warming": runs({"warming": 1}, {"warming": 3}),
        "all": runs({"warming": 2, "pooling": 0}, {"warming": 0, "pooling": 0}),
    }
    text = format_markdown(result)
    assert (
        "Runs in which a plugin stepped aside (its work did not pay) at least once:\n\n"
        "| plugin | 1 worker | 4 workers | 16 workers |\n"
        "|---|---:|---:|---:|\n"
        "| pooling in all | 0/2 | 0/2 | - |\n"
        "| warming in all | 0/2 | 1/2 | - |\n"
        "| warming | - | 2/2 | - |\n"
    ) in text
    assert "stepped aside" not in format_markdown(FIXTURE)  # runs that never recorded it


# -- --redis -----------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def _redis_port(progress: str) -> int:
    found = re.search(r"redis-server at redis://127\.0\.0\.1:(\d+)/0, emptied", progress)
    assert found, progress
    return int(found.group(1))


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@needs_redis
def test_redis_is_given_to_every_run_emptied_before_each_and_stopped(trader, tmp_path):
    shared = "shared" in installed_names()
    sets = "none,shared" if shared else "none"
    progress = io.StringIO()
    result = bench_trader(
        "mytrader:shared_probe", sets, repeats=2, cycles=1, progress=progress, redis=True
    )
    port = _redis_port(progress.getvalue())
    url = f"redis://127.0.0.1:{port}/0"
    assert result["redis"] is True
    assert all(s["same_decisions"] for s in result["sets"].values())
    probes = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    assert len(probes) == 2 * len(sets.split(","))
    for probe in probes:
        # every run sees the URL, and finds nothing an earlier run left (it left a key)
        assert probe["url"] == url and probe["found"] == ":0", probe
        if probe["active"] == ["shared"]:
            assert probe["written"] != ":0", probe  # the plugin used the URL it was given
        else:
            assert probe["active"] == [] and probe["written"] == ":0", probe
    assert sum(p["active"] == ["shared"] for p in probes) == (2 if shared else 0)
    assert not _answers(port)  # stopped
    assert ENV_SHARED_URL not in os.environ  # given to the runs, not set here


@needs_redis
def test_redis_is_stopped_when_a_run_fails(trader):
    progress = io.StringIO()
    with pytest.raises(TraderBenchError, match="the trader broke"):
        bench_trader("mytrader:broken", "none", repeats=1, cycles=1, progress=progress, redis=True)
    assert not _answers(_redis_port(progress.getvalue()))


def test_redis_without_redis_server_on_path_is_one_clear_error(trader, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # the runs start sys.executable, a full path
    with pytest.raises(TraderBenchError, match="--redis needs redis-server on PATH"):
        bench_trader("mytrader:threaded", "none", repeats=1, cycles=1, workers=[1], redis=True)


# -- the reference trader as a bench target ----------------------------------------------

needs_host = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="the host extra is not installed"
)


@needs_host
def test_the_reference_trader_decides_as_sltrader_run_does(monkeypatch, tmp_path, capsys):
    from sltrader_plugins.host.bench_target import cycles

    monkeypatch.chdir(tmp_path)  # no sltrader.toml of the checkout's
    monkeypatch.setenv("SLTRADER__HOST__SIZE", "small")
    monkeypatch.setenv("SLTRADER_PLUGINS", "")
    decisions = cycles(20, 2)
    assert {d[0] for d in decisions} == {"signal", "order"}
    assert json.loads(json.dumps(decisions)) == decisions
    assert cycles(20, 1) == decisions  # thread timing and the count decide nothing
    out = tmp_path / "run.json"
    argv = ["run", "--size", "small", "--cycles", "20", "--workers", "2", "--plugins", ""]
    assert sltrader([*argv, "--quiet", "--json", str(out)]) == 0
    capsys.readouterr()
    digest = hashlib.sha256()
    for decision in decisions:
        text = "|".join(f"{f:.6f}" if isinstance(f, float) else str(f) for f in decision)
        digest.update(text.encode() + b"\n")
    assert digest.hexdigest() == json.loads(out.read_text())["decisions_digest"]


@needs_host
def test_sltrader_bench_runs_the_reference_trader_like_any_other(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLTRADER__HOST__SIZE", "small")
    result = bench_trader(
        "sltrader_plugins.host.bench_target:cycles",
        "none",
        repeats=1,
        cycles=20,
        workers=[1, 2],
        progress=io.StringIO(),
    )
    one, two = (result["workers"][c]["runs"]["none"][0] for c in ("1", "2"))
    assert one["decisions"] > 0 and one["decisions_digest"] == two["decisions_digest"]
