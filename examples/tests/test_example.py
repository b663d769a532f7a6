"""The example trader decides the same with any set of plugins, and docs/integration.md's
diffs are exactly what separates it from the same trader without plugins.

Every run is a subprocess of the real command line, all started at once. The
plugin-free trader is not kept anywhere: it is rebuilt by undoing the documented diffs
on a copy of the example, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sltrader_plugins.bench.trader import bench_trader

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integration.md"
PLUGIN_SETS = ["batching", "pooling", "warming", "batching,pooling,warming"]
NO_PLUGINS = ""
PLUGIN_FREE = "plugin-free trader"  # the example with the documented diffs undone
MAX_CHANGED_LINES = 25


def diff_blocks() -> list[str]:
    """The ```diff blocks of the walk-through: the feature switch, the call sites, the
    exchange hooks."""
    return re.findall(r"^```diff\n(.*?)^```", DOC.read_text(), re.S | re.M)


def changed_lines(diff: str) -> tuple[int, int]:
    """``(added, removed)``: a changed line is removed and added, so it counts in both."""
    lines = diff.splitlines()
    added = sum(line.startswith("+") and not line.startswith("+++") for line in lines)
    removed = sum(line.startswith("-") and not line.startswith("---") for line in lines)
    return added, removed


def unapply(diff: str, root: Path) -> None:
    """Undo a unified diff (paths ``a/...``, ``b/...``) in the tree at ``root``.

    Strict: every hunk's new side must be in the file, exactly at the line it names.
    """
    files = re.split(r"^--- a/(.+)\n\+\+\+ b/.+\n", diff, flags=re.M)
    for path, body in zip(files[1::2], files[2::2], strict=True):
        lines = (root / path).read_text().splitlines()
        hunks = re.split(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@.*\n", body, flags=re.M)
        for start, hunk in reversed(list(zip(hunks[1::2], hunks[2::2], strict=True))):
            old, new = [], []
            for line in hunk.splitlines():
                tag, text = line[:1] or " ", line[1:]  # an editor may strip a blank " "
                if tag != "+":
                    old.append(text)
                if tag != "-":
                    new.append(text)
            at = int(start) - 1
            assert lines[at : at + len(new)] == new, f"{path}: the hunk at +{start} differs"
            lines[at : at + len(new)] = old
        (root / path).write_text("\n".join(lines) + "\n")


def plugin_free_copy(root: Path) -> Path:
    shutil.copytree(
        ROOT / "examples",
        root / "examples",
        # the example trader alone: examples/stock_trader keeps its own plugin-free version
        ignore=shutil.ignore_patterns("__pycache__", "tests", "stock_trader", "*.md", "*.txt"),
    )
    for diff in reversed(diff_blocks()):  # the later step first
        unapply(diff, root)
    return root


def start(cwd: Path, out: Path, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "examples.trader", "--out", str(out), *options]
    return subprocess.Popen(
        command, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every run's output lines, by plugin set (all started at once: they are independent)."""
    tmp = tmp_path_factory.mktemp("runs")
    started = {
        names: start(ROOT, tmp / f"{i}.jsonl", "--plugins", names)
        for i, names in enumerate([NO_PLUGINS, *PLUGIN_SETS])
    }
    started[PLUGIN_FREE] = start(plugin_free_copy(tmp / "plugin_free"), tmp / "free.jsonl")
    found = {}
    for names, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{names or 'no plugins'}: {stderr}"
        assert "faults: {}" in stdout or names == PLUGIN_FREE, stdout
        out = Path(process.args[process.args.index("--out") + 1])
        found[names] = [json.loads(line) for line in out.read_text().splitlines()]
    return found


def decisions(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] in ("prediction", "signal")]


def assert_same_decisions(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], rel=0, abs=1e-9), (a, b)
        assert {**a, "probability": None} == {**b, "probability": None}


def test_the_run_without_plugins_decides_something(runs):
    lines = decisions(runs[NO_PLUGINS])
    kinds = [line["kind"] for line in lines]
    assert kinds.count("prediction") == 3 * 120 and kinds.count("signal") >= 5
    assert {line["side"] for line in lines if line["kind"] == "signal"} == {"buy", "sell"}
    assert runs[NO_PLUGINS][-1]["active"] == []


@pytest.mark.parametrize("names", PLUGIN_SETS)
def test_plugins_change_no_prediction_and_no_signal(runs, names):
    assert_same_decisions(decisions(runs[names]), decisions(runs[NO_PLUGINS]))


@pytest.mark.parametrize("names", PLUGIN_SETS)
def test_the_chosen_plugins_were_active_worked_and_never_faulted(runs, names):
    summary = runs[names][-1]
    assert summary["kind"] == "summary"
    assert summary["active"] == names.split(",")
    assert summary["faults"] == {}
    for name in summary["active"]:  # each reports counters, and did something
        assert any(v > 0 for k, v in summary["metrics"].items() if k.startswith(f"{name}.")), name


def test_the_plugin_free_trader_is_the_example_less_the_diff(runs):
    assert_same_decisions(decisions(runs[PLUGIN_FREE]), decisions(runs[NO_PLUGINS]))
    assert "active" not in runs[PLUGIN_FREE][-1]


def test_the_plugin_free_trader_mentions_no_plugins(tmp_path):
    for path in (plugin_free_copy(tmp_path) / "examples").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.Name) and node.id in ("Plugins", "plugins")), path
            assert not (isinstance(node, ast.Attribute) and node.attr == "plugins"), path
            assert not (isinstance(node, ast.alias) and node.name == "Plugins"), path


def test_the_diffs_are_the_feature_switch_then_at_most_25_lines_of_call_sites():
    features, call_sites, _ = diff_blocks()
    assert re.findall(r"^\+\+\+ b/(.+)$", features, re.M) == ["examples/trader/features.py"]
    assert "examples/trader/features.py" not in call_sites
    added, removed = changed_lines(call_sites)
    # Every removed line comes back changed: nothing of the trader's own goes.
    assert removed <= added <= MAX_CHANGED_LINES
    assert f"{added} changed lines" in DOC.read_text()


def test_the_exchange_step_wraps_the_caches_fetch_and_says_how_many_lines():
    exchange = diff_blocks()[2]
    files = re.findall(r"^\+\+\+ b/(.+)$", exchange, re.M)
    assert files == ["examples/trader/main.py", "examples/trader/cache.py"]
    assert "plugins.fetching(exchange.fetch_klines)" in exchange
    added, removed = changed_lines(exchange)
    assert removed <= added
    assert f"({added} changed lines" in DOC.read_text()


def test_sltrader_bench_runs_the_example_and_every_set_decides_as_none(monkeypatch):
    monkeypatch.chdir(ROOT)  # the bench's processes import examples.trader from here
    monkeypatch.syspath_prepend(str(ROOT))
    result = bench_trader(
        "examples.trader.bench:cycles", "none,all", repeats=1, cycles=24, workers=[1, 3]
    )
    assert list(result["workers"]) == ["1", "3"]
    for count in result["workers"].values():
        assert list(count["sets"]) == ["none", "all"]
        assert all(s["same_decisions"] for s in count["sets"].values())
        assert count["sets"]["none"]["decisions"] > 0  # it signalled: a decision to keep
    # one thread or one per symbol: the same signals
    digests = {c["runs"]["none"][0]["decisions_digest"] for c in result["workers"].values()}
    assert len(digests) == 1
