"""Every bench table in README.md and docs/ is what its committed JSON renders to."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("render_figures", ROOT / "tools/render_figures.py")
assert spec is not None and spec.loader is not None
render_figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_figures)


def test_every_figure_is_rendered_from_its_json() -> None:
    # the peer bench's table is rendered by bench/peer_batching.py, which needs the plugin
    pytest.importorskip("sltrader_batching")
    assert render_figures.stale() == []


def test_a_figure_typed_by_hand_is_found(tmp_path: Path) -> None:
    page = ROOT / "docs" / "plugins.md"
    text = page.read_text()
    blocks = render_figures.BLOCK.findall(text)
    assert blocks, "docs/plugins.md shows the step-aside bench"
    edited = text.replace("| none |", "| none (typed) |", 1)
    assert render_figures.render(edited) == text


def test_every_committed_bench_json_is_shown_somewhere() -> None:
    shown = {
        m[1] for p in render_figures.pages() for m in render_figures.BLOCK.findall(p.read_text())
    }
    committed = {str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "bench").glob("*.json")}
    assert committed <= shown
    for name in committed:
        assert json.loads((ROOT / name).read_text())["command"]  # how it was produced
