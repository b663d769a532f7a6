"""The two contract pages list every public name with the signature the code has, and
the trader page's program decides the same with the installed plugins as without."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import sltrader_plugins

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("render_api", ROOT / "tools/render_api.py")
assert spec is not None and spec.loader is not None
render_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_api)


def test_every_signature_on_the_contract_pages_is_the_codes():
    assert render_api.stale() == []


def test_every_public_name_is_on_a_contract_page():
    listed = {name.rpartition(":")[2] for name in render_api.documented()}
    public = set(sltrader_plugins.__all__) - {"__version__"}
    assert public - listed == set()


def test_a_changed_signature_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- api: last_close_time -->\n- `last_close_time(timeframe)`\n<!-- /api -->\n"
    )
    found = render_api.stale((page,), write=True)
    assert len(found) == 1 and found[0].endswith(": last_close_time")
    text = page.read_text()
    assert "`last_close_time(timeframe: str, now: float) -> float`" in text
    assert render_api.stale((page,)) == []


def _the_whole_trader() -> str:
    text = (ROOT / "docs" / "trader.md").read_text()
    return re.search(r"## A whole trader.*?```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("enabled", ["", None], ids=["none", "installed"])
def test_the_whole_trader_runs_and_decides_as_without_plugins(enabled, monkeypatch):
    def run(plugins: str) -> list:
        monkeypatch.setenv("SLTRADER_PLUGINS", plugins)
        namespace: dict = {"__name__": "__doc_block__"}
        exec(compile(_the_whole_trader(), "trader.md", "exec"), namespace)
        return [(s.symbol, s.probability) for s in namespace["signals"]]

    without = run("")
    installed = ",".join(
        info.name for info in sltrader_plugins.Plugins.load(plugins="").installed()
    )
    assert without and run(installed if enabled is None else "") == without
