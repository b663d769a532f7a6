"""The bench's picture: drawn from a saved bench JSON, its numbers, and without matplotlib."""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sltrader_plugins.host.figures import figures
from sltrader_plugins.output import plot
from sltrader_plugins.output.plot import Ratio, bench_ratios, plot_bench, scan_series

DATA = Path(__file__).parent / "data"


def saved() -> dict[str, Any]:
    """``sltrader bench --size small --cycles 4 --repeats 2 --sets none,all --json``."""
    return json.loads((DATA / "bench-small.json").read_text(encoding="utf-8"))


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def small() -> dict[str, Any]:
    """A hand-made bench: none, batching and all, three repeats, two figures."""
    runs = {
        "none": [
            {"scan_stale_s": 0.20, "cache_hit_rate": 0.80},
            {"scan_stale_s": 0.22, "cache_hit_rate": 0.80},
            {"scan_stale_s": 0.18, "cache_hit_rate": 0.80},
        ],
        "batching": [
            {"scan_stale_s": 0.10, "cache_hit_rate": 0.80},
            {"scan_stale_s": 0.12, "cache_hit_rate": 0.80},
            {"scan_stale_s": 0.30, "cache_hit_rate": 0.80},
        ],
        "all": [
            {"scan_stale_s": 0.40, "cache_hit_rate": 0.96},
            {"scan_stale_s": 0.20, "cache_hit_rate": 1.00},
            {"scan_stale_s": 0.30, "cache_hit_rate": 0.88},
        ],
    }
    scans = {
        name: [
            {"scan_times_s": [0.2 + r / 100, 0.1, 0.1, 0.3], "stale": [True, False, False, True]}
            for r in range(3)
        ]
        for name in runs
    }
    return {
        "workload": {"size": "tiny", "repeats": 3, "python": "3.11.7", "sets": {}},
        "sets": {
            "none": {"scan_stale_s": 0.20, "cache_hit_rate": 0.80},
            "batching": {"scan_stale_s": 0.12, "cache_hit_rate": 0.80},
            "all": {"scan_stale_s": 0.30, "cache_hit_rate": 0.96},
        },
        "runs": runs,
        "scans": scans,
    }


def test_ratios_are_the_median_ratio_and_each_repeat_over_the_none_median():
    ratios = bench_ratios(small())
    assert set(ratios) == {"scan_stale_s", "cache_hit_rate"}  # the others are absent
    stale = ratios["scan_stale_s"]
    assert stale["none"] == Ratio(1.0, pytest.approx(0.9), pytest.approx(1.1), None)
    assert stale["batching"] == Ratio(
        pytest.approx(0.6), pytest.approx(0.5), pytest.approx(1.5), True
    )
    assert stale["all"] == Ratio(pytest.approx(1.5), pytest.approx(1.0), pytest.approx(2.0), False)
    hits = ratios["cache_hit_rate"]  # higher is better
    assert hits["all"] == Ratio(pytest.approx(1.2), pytest.approx(1.1), pytest.approx(1.25), True)
    assert hits["batching"].improved is None  # x1.00: neither


def test_ratios_skip_what_cannot_be_compared():
    result = small()
    del result["sets"]["batching"]["cache_hit_rate"]
    for row in result["runs"]["batching"]:
        del row["cache_hit_rate"]
    result["sets"]["none"]["scan_stale_s"] = 0.0  # no reference: no ratio
    ratios = bench_ratios(result)
    assert set(ratios) == {"cache_hit_rate"}
    assert set(ratios["cache_hit_rate"]) == {"none", "all"}
    del result["sets"]["none"]
    assert bench_ratios(result) == {}


def test_ratios_of_a_json_without_runs_are_the_medians():
    result = small()
    del result["runs"]
    ratio = bench_ratios(result)["scan_stale_s"]["batching"]
    assert ratio.low == ratio.median == ratio.high == pytest.approx(0.6)


def test_the_saved_bench_ratios_match_its_table():
    result = saved()
    ratios = bench_ratios(result)
    assert set(ratios) == set(plot.PLOT_FIGURES)
    for key, row in ratios.items():
        expected = result["sets"]["all"][key] / result["sets"]["none"][key]
        assert row["all"].median == pytest.approx(expected)
        assert row["all"].low <= row["all"].median <= row["all"].high
    assert ratios["feature_alloc_bytes_per_build"]["all"].improved is True


def test_scan_series_is_the_median_per_cycle_with_the_stale_scans():
    series = scan_series(small(), "none")
    assert series is not None
    assert series.seconds == pytest.approx([0.21, 0.1, 0.1, 0.3])
    assert series.low[0] == pytest.approx(0.2) and series.high[0] == pytest.approx(0.22)
    assert series.stale == [True, False, False, True]
    assert scan_series(small(), "pooling") is None
    assert scan_series(saved(), "all").stale == [True, False, False, False]


def test_labels_come_from_the_figures():
    every = figures()
    assert plot.title_of("scan_stale_s") == "scan wall time after a candle close"
    assert plot.title_of("confirm_hit_rate") == "cache hit rate of confirmation reads"
    assert plot.title_of("rss_peak_bytes") == "peak RSS"
    assert plot.title_of("cache_hit_rate") == every["cache_hit_rate"].label
    assert plot.readable(0.1853, every["scan_stale_s"]) == "185 ms"
    assert plot.readable(2.76e-4, every["model_s_per_prediction"]) == "276 µs"
    assert plot.readable(207_500_000, every["rss_peak_bytes"]) == "198 MiB"
    assert plot.readable(6220, every["exchange_requests"]) == "6220"


def test_a_plot_is_drawn_from_a_saved_bench(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    plot_bench(saved(), out)
    width, height = png_size(out)
    assert width >= 1200 and height >= 800
    assert 20_000 < out.stat().st_size < 300_000


@pytest.mark.parametrize(
    "change",
    ["no all", "only none", "no none", "a figure missing", "no runs or scans", "empty"],
)
def test_a_partial_bench_still_plots(tmp_path, change):
    pytest.importorskip("matplotlib")
    result = copy.deepcopy(small())
    if change == "no all":
        for part in ("sets", "runs", "scans"):
            del result[part]["all"]
    elif change == "only none":
        for part in ("sets", "runs", "scans"):
            result[part] = {"none": result[part]["none"]}
    elif change == "no none":
        for part in ("sets", "runs", "scans"):
            del result[part]["none"]
    elif change == "a figure missing":
        del result["sets"]["all"]["scan_stale_s"]
        for row in result["runs"]["all"]:
            del row["scan_stale_s"]
    elif change == "no runs or scans":
        del result["runs"], result["scans"]
    else:
        result = {}
    out = tmp_path / "bench.png"
    plot_bench(result, out)
    png_size(out)


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as caught:
        plot_bench(saved(), tmp_path / "bench.png")
    assert isinstance(caught.value, plot.PlotUnavailable)
    assert "python3 -m pip install 'sltrader-plugins[plot]'" in str(caught.value)
    assert not (tmp_path / "bench.png").exists()


def test_importing_the_package_and_the_plot_does_not_import_matplotlib():
    code = (
        "import sys, sltrader_plugins, sltrader_plugins.output.plot, "
        "sltrader_plugins.bench.reference; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
