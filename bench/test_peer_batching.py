"""The peer bench in its quick mode: every set's answers equal plain ``predict`` (no timing).

``run`` raises on any answer more than 1e-9 from plain ``predict``; this checks the points
it reports, for every model and set, so a broken peer or batcher fails CI, a slow one not.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "peer_batching", Path(__file__).with_name("peer_batching.py")
)
assert _spec is not None and _spec.loader is not None
peer_batching = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_batching)

#: The keys of every point, and those only sltrader's points have (its batcher's counts)
KEYS = {"model", "workers", "set", "wall_s", "model_s_per_prediction", "walls_s"}
COUNTS = {"mean_batch_size", "alone", "dispatch_idle", "dispatch_wait"}


def test_quick_peer_bench_answers_match_plain_predict(tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    assert peer_batching.main(["--quick", "--json", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    sets = {p["set"] for p in points}
    assert sets == {"plain", "batched-0.5ms", "batched-5ms", "sltrader"}
    assert {p["model"] for p in points} == {"sgd", "histgb", "lightgbm"}
    assert {p["workers"] for p in points} == {1, 4}
    for point in points:
        ours = point["set"] == "sltrader"
        assert set(point) == KEYS | (COUNTS if ours else set())
        assert point["wall_s"] > 0 and point["model_s_per_prediction"] > 0
        assert point["walls_s"] == [point["wall_s"]]  # one repeat
        if ours and point["workers"] == 1:
            # one worker has nobody to batch with: every request is handed straight back
            assert point["alone"] == 64 and point["mean_batch_size"] == 0
        elif ours:
            assert point["alone"] < 64 and point["mean_batch_size"] >= 1


@pytest.mark.parametrize("collect", ["in-order", "all"])
def test_without_the_peer_only_plain_and_sltrader_run(collect: str) -> None:
    lines: list[str] = []
    points = peer_batching.points_of(
        peer_batching.measure(
            ["sgd"], [1, 2], symbols=16, repeats=2, peers=False, collect=collect, out=lines.append
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
        (w, s) for w in (1, 2) for s in ("plain", "plain-again", "sltrader")
    ]
    # two processes of two repeats each, every pass's answers checked in its process;
    # the same keys as from one process
    assert all(len(p["walls_s"]) == 4 for p in points)
    for point in points:
        assert set(point) == KEYS | (COUNTS if point["set"] == "sltrader" else set())
    assert all(p["alone"] == 16 for p in points if p["set"] == "sltrader" and p["workers"] == 1)
    printed = capfd.readouterr().out  # the children print too
    assert "process 2/2" in printed and "pooled, 2 processes:" in printed
    assert printed.count("A/A x") == 6  # a row per point: two per process, two pooled


def test_an_unbalanced_count_of_repeats_is_one_warning_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--models", "sgd", "--workers", "2", "--symbols", "16", "--no-peer"]
    assert peer_batching.main([*argv, "--repeats", "3"]) == 0  # two sets: 3 is not 2k
    warned = capsys.readouterr().err.splitlines()
    assert warned == [
        "warning: 3 repeats in all is not a multiple of 2: with 2 sets the run order is "
        "not balanced"
    ]
    assert peer_batching.main([*argv, "--repeats", "2"]) == 0
    assert capsys.readouterr().err == ""


def test_processes_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit):
        peer_batching.main(["--processes", "0"])


def test_paired_ratio_is_the_median_of_each_repeats_ratio() -> None:
    # medians 2.0 and 2.0 (x1.00); within each repeat, ours is half or twice theirs
    assert peer_batching.paired_ratio([1.0, 2.0, 4.0], [2.0, 1.0, 2.0]) == 2.0
    assert peer_batching.paired_ratio([1.0, 1.0], [2.0, 4.0]) == 0.375


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_set_orders_are_balanced(count: int) -> None:
    """Over as many repeats as sets (twice that for an odd count), each set runs equally
    often in each position and right after each other set equally often: no set always
    follows the same neighbour."""
    names = ["plain", "plain-again", "batched-0.5ms", "batched-5ms", "sltrader"][:count]
    rounds = peer_batching.design_length(count) // count
    orders = [peer_batching.balanced_order(names, r) for r in range(rounds * count)]
    assert all(sorted(order) == sorted(names) for order in orders)
    for position in range(count):
        assert sorted(order[position] for order in orders) == sorted(names * rounds)
    follows = [(a, b) for order in orders for a, b in itertools.pairwise(order)]
    pairs = [(a, b) for a in names for b in names if a != b]
    assert sorted(follows) == sorted(pairs * rounds)
