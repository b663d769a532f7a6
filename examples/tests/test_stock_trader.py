"""The stock trader: the plugin-free bot (plain.py) and bot.py with no plugin, with each
plugin alone and with all three decide the same; bot.py is plain.py plus a bounded diff;
plain.py knows nothing of plugins; the candle still forming never reaches a decision.

Every run is a subprocess of the real command line, all started at once when the module's
first test starts; the in-process tests run while they do.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from examples.stock_trader import bot, plain
from examples.stock_trader.exchange import DAILY, SECONDS, WEEKLY, ReplayExchange
from examples.stock_trader.features import latest_features, ohlcv_frame
from examples.stock_trader.frame_cache import FrameCache
from examples.stock_trader.trading import LIMITS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "stock_trader"
CYCLES, WORKERS = 5, 8  # 5 days of 131 symbols: dozens of decisions
ALL = "batching,pooling,warming"
RUNS = {  # name: options of python -m examples.stock_trader
    "plain": ["--plain"],
    "none": ["--plugins", ""],
    "batching": ["--plugins", "batching"],
    "pooling": ["--plugins", "pooling"],
    "warming": ["--plugins", "warming"],
    "all": ["--plugins", ALL],
}
#: Lines added plus lines removed from plain.py to bot.py (difflib); README.md says so.
MAX_DIFF_LINES = 59


@pytest.fixture(scope="module", autouse=True)
def launched(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path]]]:
    tmp = tmp_path_factory.mktemp("stock_trader")
    env = {k: v for k, v in os.environ.items() if k != "SLTRADER_PLUGINS"}
    started = {}
    for name, options in RUNS.items():
        out = tmp / f"{name}.json"
        command = [sys.executable, "-m", "examples.stock_trader", "--out", str(out)]
        command += ["--cycles", str(CYCLES), "--workers", str(WORKERS), *options]
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        started[name] = (process, out)
    yield started
    for process, _ in started.values():  # a failed test leaves no run behind
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def runs(launched: dict[str, tuple[subprocess.Popen[str], Path]]) -> dict[str, dict[str, Any]]:
    found = {}
    for name, (process, out) in launched.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: {stderr}"
        found[name] = json.loads(out.read_text())
    return found


class PoisonedExchange(ReplayExchange):
    """The forming candle is one no trader could mistake for a normal day."""

    def forming_day(self, day: np.ndarray) -> np.ndarray:
        return np.array([day[0] * 1.5, day[0] * 2.0, day[0] * 0.5, day[0] * 1.7, 1e12])


def scans(run: plain.Run) -> list[list[dict[str, Any]]]:
    return [[dataclasses.asdict(a) for a in scan] for scan in run.scans]


# -- 3. plain.py knows nothing of plugins ------------------------------------------------


def test_plain_mentions_no_plugin() -> None:
    tree = ast.parse((PACKAGE / "plain.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("sltrader"), node.module
        if isinstance(node, ast.alias):
            assert "sltrader" not in node.name and "plugin" not in node.name.lower()
        if isinstance(node, ast.Name):
            assert "plugin" not in node.id.lower(), node.id
    # Nor does anything it imports, however indirectly.
    check = (
        "import sys, examples.stock_trader.plain; "
        "print([m for m in sys.modules if m.startswith(('sltrader', 'pluggy'))])"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


# -- 2. bot.py is plain.py plus the integration, and no more ------------------------------


def test_the_integration_is_a_bounded_diff() -> None:
    before = (PACKAGE / "plain.py").read_text().splitlines()
    after = (PACKAGE / "bot.py").read_text().splitlines()
    diff = list(difflib.unified_diff(before, after, lineterm="", n=0))
    added = sum(line.startswith("+") and not line.startswith("+++") for line in diff)
    removed = sum(line.startswith("-") and not line.startswith("---") for line in diff)
    assert 0 < added + removed <= MAX_DIFF_LINES, (added, removed)
    assert f"at most {MAX_DIFF_LINES} lines" in (PACKAGE / "README.md").read_text()
    # Through the public surface only, never the reference host.
    assert "sltrader_plugins.host" not in (PACKAGE / "bot.py").read_text()


# -- 4. the forming candle never reaches a decision ----------------------------------------


def test_both_bots_read_closed_candles_only() -> None:
    clean, poisoned = ReplayExchange(latency_s=0.0), PoisonedExchange(latency_s=0.0)
    for clock in (clean.clock, poisoned.clock):
        for _ in range(3):  # a Sunday: the forming week holds six closed days
            clock.advance()
    now, symbol = clean.clock.now(), clean.symbols[0]
    for timeframe in (DAILY, WEEKLY):
        rows = clean.fetch_ohlcv(symbol, timeframe)
        bad = poisoned.fetch_ohlcv(symbol, timeframe)
        # The exchange's newest row is the candle forming now, and only it is poisoned.
        assert rows[-1][0] / 1000 <= now < rows[-1][0] / 1000 + SECONDS[timeframe]
        assert bad[:-1] == rows[:-1] and bad[-1] != rows[-1]
        closed = ohlcv_frame(*np.array(rows[:-1])[:, 1:].T)
        own = FrameCache(poisoned.fetch_ohlcv, poisoned.clock, LIMITS).get(symbol, timeframe)
        pd.testing.assert_frame_equal(own, closed)
        klines = bot.fetch_klines(poisoned, symbol, timeframe, LIMITS[timeframe])
        assert klines.last_close_time == rows[-1][0] / 1000  # the forming one's open
        pd.testing.assert_frame_equal(bot.frame(klines), closed)
    # Were the poisoned row read, the features would show it.
    daily = poisoned.fetch_ohlcv(symbol, DAILY)
    with_it = latest_features(ohlcv_frame(*np.array(daily)[:, 1:].T))
    without = latest_features(ohlcv_frame(*np.array(daily[:-1])[:, 1:].T))
    assert not np.allclose(with_it, without, equal_nan=True)


def test_a_poisoned_forming_candle_changes_no_analysis(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLTRADER_PLUGINS", "")  # bot.py's Plugins.load(): none
    days = 2
    poisoned = {
        "plain": scans(plain.run(days, WORKERS, PoisonedExchange())),
        "none": scans(bot.run(days, WORKERS, PoisonedExchange())),
    }
    runs = request.getfixturevalue("runs")
    for name, found in poisoned.items():
        # Every symbol's probability and confirmation, from training on (the model is
        # trained on history the same exchange serves) to the scans.
        assert found == runs[name]["scans"][:days], name


# -- 1. every version decides the same --------------------------------------------------


def test_the_runs_decide_something(runs: dict[str, dict[str, Any]]) -> None:
    decisions = runs["plain"]["decisions"]
    signals = [d for d in decisions if d["kind"] == "signal"]
    assert len(signals) >= 10 and {d["side"] for d in signals} == {"buy", "sell"}
    assert sum(d["kind"] == "order" for d in decisions) >= 5
    assert len(runs["plain"]["scans"]) == CYCLES
    assert all(len(scan) == 131 for scan in runs["plain"]["scans"])
    assert decisions == sorted(decisions, key=lambda d: d["time"])  # day by day


@pytest.mark.parametrize("name", [name for name in RUNS if name != "plain"])
def test_bot_decides_as_the_plugin_free_bot(runs: dict[str, dict[str, Any]], name: str) -> None:
    assert runs[name]["decisions"] == runs["plain"]["decisions"]
    assert runs[name]["scans"] == runs["plain"]["scans"]  # every probability, to the bit


@pytest.mark.parametrize("name", [name for name in RUNS if name != "plain"])
def test_the_chosen_plugins_ran_and_never_faulted(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    summary = runs[name]["summary"]
    chosen = RUNS[name][1]
    assert summary["active"] == (chosen.split(",") if chosen else [])
    assert summary["faults"] == {}
    metrics = summary["metrics"]
    if "batching" in summary["active"]:
        assert metrics["batching.requests"] > 0  # the predictions went through it
    if "warming" in summary["active"]:
        assert metrics["warming.prefetches_used"] > 0
    if "pooling" in summary["active"]:
        # pandas features never ask for buffers: installed, it has nothing to lend.
        assert metrics["pooling.builds"] == 0
