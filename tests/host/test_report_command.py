"""``sltrader report BENCH.json`` and the ``--plot`` option of bench and report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sltrader_plugins.cli import main

SAVED = Path(__file__).parent / "data" / "bench-small.json"


def test_report_shows_a_saved_bench_and_draws_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    assert main(["report", str(SAVED), "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    assert "decisions digest" in captured.out and f"wrote {png}" in captured.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_of_something_else_is_one_line(tmp_path, capsys):
    bad = tmp_path / "run.json"
    bad.write_text('{"cycles": 3}')
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sltrader: error: {bad} is not a saved bench")


def without_matplotlib(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )


def test_a_plot_without_matplotlib_says_what_to_install_before_a_bench(monkeypatch, capsys):
    without_matplotlib(monkeypatch)
    # the bench would take minutes: the missing extra is found before it starts
    assert main(["bench", "--size", "full", "--plot", "x.png", "--plugins", ""]) == 2
    assert main(["report", str(SAVED), "--plot", "x.png"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sltrader")]
    assert (
        lines
        == [
            "sltrader: error: plotting needs matplotlib, an optional extra: "
            "python3 -m pip install 'sltrader-plugins[plot]'"
        ]
        * 2
    )
