"""The peer bench in its quick mode: every set's answers equal plain ``predict`` (no timing).

``measure`` raises on any answer more than 1e-9 from plain ``predict`` (and on a plugin
fault); this checks the points it reports, for every model and set (both peers, the
batcher driven directly and the plugin through the public call sites), so a broken peer,
batcher or call site fails CI, a slow one not.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sltrader_batching.config import BatchingConfig
from sltrader_plugins import ModelAdapter

_spec = importlib.util.spec_from_file_location(
    "peer_batching", Path(__file__).with_name("peer_batching.py")
)
assert _spec is not None and _spec.loader is not None
peer_batching = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_batching)

#: The keys of every point, and those only the batcher's sets have (its counters)
KEYS = {"model", "workers", "set", "wall_s", "model_s_per_prediction", "walls_s"}
KEYS |= {"scan_s", "rows_per_call"}
COUNTS = {"mean_batch_size", "alone", "dispatch_idle", "dispatch_wait"}
BATCHERS = {"sltrader", "direct-microbatcher"}
ALL_SETS = {"plain", "batched-0.5ms", "batched-5ms", "batch-inference-1ms", "batch-inference-5ms"}
ALL_SETS |= BATCHERS


def test_quick_peer_bench_answers_match_plain_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "peer.json"
    assert peer_batching.main(["--quick", "--json", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    assert {p["set"] for p in points} == ALL_SETS
    assert {p["model"] for p in points} == {"sgd", "histgb", "lightgbm"}
    assert {p["workers"] for p in points} == {1, 4}
    for point in points:
        batcher = point["set"] in BATCHERS
        assert set(point) == KEYS | (COUNTS if batcher else set())
        assert point["wall_s"] > 0 and point["model_s_per_prediction"] > 0
        assert 0 < point["scan_s"] <= point["wall_s"]  # the run is start, scan, stop
        assert point["walls_s"] == [point["wall_s"]]  # one repeat
        if point["set"] == "plain" or point["workers"] == 1:
            # one worker has nobody to batch with: every prediction is a call of one row
            assert point["rows_per_call"] == 1
        elif point["set"].startswith("batch"):  # either peer, at 4 workers
            assert point["rows_per_call"] > 1
        if batcher and point["workers"] == 1:
            # every request is handed straight back
            assert point["alone"] == 64 and point["mean_batch_size"] == 0
        elif batcher:
            assert point["alone"] < 64 and point["mean_batch_size"] >= 1
            assert point["rows_per_call"] > 1
    # a row per point on stdout, then the markdown table: a row per (model, workers)
    printed = capsys.readouterr()
    table = [line for line in printed.out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 6
    assert "direct MicroBatcher" in table[0] and "batch-inference-1ms" in table[0]
    assert "sgd 4w repeat 1/1 sltrader:" in printed.err  # progress
    saved = json.loads(out.read_text())
    assert saved["command"][:2] == ["python", "bench/peer_batching.py"]
    assert saved["machine"]["cpus"] >= 1 and saved["symbols"] == 64
    text = peer_batching.format_markdown(saved)
    assert text.endswith(f"Python {saved['machine']['python']}.\n")
    assert "\n".join(table) in text and "Command: `python bench/peer_batching.py --quick" in text


def test_the_call_sites_run_the_plugins_hooks() -> None:
    """The ``sltrader`` set goes through ``Plugins``: the batching plugin loaded alone,
    started with the pool's size, its counters read through ``plugins.metrics()``."""
    estimator = peer_batching.train("sgd")
    closes = peer_batching.series(16, seed=11)
    done = peer_batching.scan(estimator, closes, 2, peer_batching.run_sltrader(BatchingConfig()))
    expected = [ModelAdapter(estimator).predict(peer_batching.build_features(c)) for c in closes]
    assert done.answers == pytest.approx(expected, abs=1e-9)
    counts = done.batcher_counts
    assert counts is not None
    # every symbol went through before_predict: batched, or handed back alone
    assert counts["batched_requests"] + counts["alone"] == 16 and counts["batches"] >= 1


@pytest.mark.parametrize("wait_ms", peer_batching.PEER_WAITS_MS)
def test_batch_inference_answers_each_caller_its_own_row(wait_ms: int) -> None:
    estimator = peer_batching.train("sgd")
    closes = peer_batching.series(24, seed=3)
    done = peer_batching.scan(estimator, closes, 3, peer_batching.run_batch_inference(wait_ms))
    expected = [ModelAdapter(estimator).predict(peer_batching.build_features(c)) for c in closes]
    assert done.answers == pytest.approx(expected, abs=1e-9)
    assert done.rows_per_call > 1
    # its idle poll was cut: stopping the host does not wait out a second
    assert done.wall_s - done.scan_s < 0.5


@pytest.mark.parametrize("collect", ["in-order", "all"])
def test_without_the_peer_only_plain_and_sltrader_run(collect: str) -> None:
    lines: list[str] = []
    points = peer_batching.points_of(
        peer_batching.measure(
            ["sgd"],
            [1, 2],
            symbols=16,
            repeats=2,
            peers=False,
            collect=collect,
            out=lines.append,
            direct=False,
            progress=lambda _: None,
        )
    )
    assert [p["set"] for p in points] == ["plain", "sltrader"] * 2
    assert all(len(p["walls_s"]) == 2 for p in points)
    # without the peer, sltrader is compared with plain at every worker count
    assert len(lines) == 2 and all("sl/plain" in line for line in lines)


def test_processes_pool_their_repeats_and_the_control_is_plain_again(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "peer.json"
    argv = ["--models", "sgd", "--workers", "1,2", "--symbols", "16", "--repeats", "2"]
    argv += ["--no-peer", "--control", "--processes", "2", "--json", str(out)]
    assert peer_batching.main(argv) == 0
    points = json.loads(out.read_text())["points"]
    assert [(p["workers"], p["set"]) for p in points] == [
        (w, s) for w in (1, 2) for s in ("plain", "plain-again", "direct-microbatcher", "sltrader")
    ]
    # two processes of two repeats each, every pass's answers checked in its process;
    # the same keys as from one process
    assert all(len(p["walls_s"]) == 4 for p in points)
    for point in points:
        assert set(point) == KEYS | (COUNTS if point["set"] in BATCHERS else set())
    assert all(p["alone"] == 16 for p in points if p["set"] in BATCHERS and p["workers"] == 1)
    printed = capfd.readouterr().out  # the children print too
    assert "process 2/2" in printed and "pooled, 2 processes:" in printed
    assert printed.count("A/A x") == 6  # a row per point: two per process, two pooled


def test_an_unbalanced_count_of_repeats_is_one_warning_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--models", "sgd", "--workers", "2", "--symbols", "16", "--no-peer", "--no-direct"]
    assert peer_batching.main([*argv, "--repeats", "3"]) == 0  # two sets: 3 is not 2k
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warned == [
        "warning: 3 repeats in all is not a multiple of 2: with 2 sets the run order is "
        "not balanced"
    ]
    assert peer_batching.main([*argv, "--repeats", "2"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_processes_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit):
        peer_batching.main(["--processes", "0"])


def test_paired_ratio_is_the_median_of_each_repeats_ratio() -> None:
    # medians 2.0 and 2.0 (x1.00); within each repeat, ours is half or twice theirs
    assert peer_batching.paired_ratio([1.0, 2.0, 4.0], [2.0, 1.0, 2.0]) == 2.0
    assert peer_batching.paired_ratio([1.0, 1.0], [2.0, 4.0]) == 0.375


def test_the_bound_compares_with_the_best_peer_of_either_library() -> None:
    def point(workers: int, set_name: str, wall: float) -> dict[str, object]:
        return {"model": "sgd", "workers": workers, "set": set_name, "wall_s": wall}

    walls = {"plain": 1.0, "batched-0.5ms": 0.6, "batch-inference-1ms": 0.5, "sltrader": 0.55}
    for workers, best in ((1, "plain"), (4, "batch-inference-1ms")):
        by_set = {s: point(workers, s, w) for s, w in walls.items()}
        assert peer_batching._against(by_set)[0] == best


def test_features_are_28_and_finite() -> None:
    features = peer_batching.build_features(peer_batching.series(3, seed=1)[0])
    assert features.shape == (28,) and np.isfinite(features).all()


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6, 7])
def test_set_orders_are_balanced(count: int) -> None:
    """Over as many repeats as sets (twice that for an odd count), each set runs equally
    often in each position and right after each other set equally often: no set always
    follows the same neighbour."""
    names = ["plain", "plain-again", "batched-0.5ms", "batched-5ms", "batch-inference-1ms"]
    names = [*names, "batch-inference-5ms", "sltrader"][:count]
    rounds = peer_batching.design_length(count) // count
    orders = [peer_batching.balanced_order(names, r) for r in range(rounds * count)]
    assert all(sorted(order) == sorted(names) for order in orders)
    for position in range(count):
        assert sorted(order[position] for order in orders) == sorted(names * rounds)
    follows = [(a, b) for order in orders for a, b in itertools.pairwise(order)]
    pairs = [(a, b) for a in names for b in names if a != b]
    assert sorted(follows) == sorted(pairs * rounds)
