"""``sltrader bench --trader``: the plugin sets on a trader of one's own, in fresh processes."""

from __future__ import annotations

import json
import textwrap

import pytest

from sltrader_plugins.cli import main as sltrader
from sltrader_plugins.trader_bench import (
    TraderBenchError,
    _summaries,
    bench_trader,
    decisions_digest,
    format_table,
    installed_names,
    load_trader,
    resolve_sets,
)

# A trader of its own: public pieces only, its plugins loaded as it always loads them.
TRADER = textwrap.dedent(
    """
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
        clock = Clock()
        plugins = Plugins.load()
        cache = SingleFlightCache(plugins.fetching(fetch_for(clock)), clock, 16, "1m")
        model = ModelAdapter(Proba())
        decisions = []
        with plugins, ThreadPoolExecutor(2) as pool:
            plugins.start(model=model, cache=cache, clock=clock, base_timeframe="1m", workers=2)

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
        return decisions


    def broken(count):
        raise RuntimeError("the trader broke")
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
    json.dumps(result)  # what --json writes


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


def test_resolve_sets():
    assert resolve_sets("none,all,a+b,c", ["a", "b"]) == [
        ("none", ""),
        ("all", "a,b"),
        ("a+b", "a,b"),
        ("c", None),
    ]
