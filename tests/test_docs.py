"""The plugin documentation lists every hook with its exact signature."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sltrader_plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = [
    f"def {node.name}({ast.unparse(node.args)}) -> {ast.unparse(node.returns)}"
    for node in ast.parse(Path(hookspecs.__file__).read_text()).body
    if isinstance(node, ast.FunctionDef) and node.returns is not None
]


def test_every_hookspec_is_parsed():
    names = {signature.split("(")[0].removeprefix("def ") for signature in SIGNATURES}
    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "sltrader_spec")}
    assert names == specs and len(names) >= 8


@pytest.mark.parametrize("signature", SIGNATURES, ids=lambda s: s.split("(")[0][4:])
def test_plugins_doc_lists_the_hook_with_its_exact_signature(signature):
    assert signature in (ROOT / "docs" / "plugins.md").read_text()


def _doc_block(after: str, language: str) -> str:
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


def test_the_documented_example_plugin_works(fake_dist, fake_entry_points):
    from sltrader_plugins import HostServices, Signal
    from sltrader_plugins.config import Config, ConfigError
    from sltrader_plugins.manager import PluginManager

    source = _doc_block("`sltrader_signalcount.py`:", "python")
    entry_point = _doc_block("`pyproject.toml`:", "toml").split("[project.entry-points.sltrader]")
    assert entry_point[1].strip() == 'signalcount = "sltrader_signalcount:SignalCount"'
    fake_dist("signalcount", source, target="SignalCount")

    def start(section: dict) -> PluginManager:
        manager = PluginManager()
        manager.load(
            Config(plugins={"signalcount": section}), environ={}, entry_points=fake_entry_points()
        )
        manager.start(HostServices(None, None, None, "1m", 1, ("5m",)))  # type: ignore[arg-type]
        return manager

    manager = start({"log_every": 3})
    assert manager.active_names() == ["signalcount"]
    for side in ("buy", "buy", "sell"):
        signal = Signal("BTC_USDT", "1m", side, 0.9, 60.0)
        manager.hook.on_signal(symbol="BTC_USDT", signal=signal, timeframe="1m")
    assert manager.metrics() == {"signalcount.buy": 2, "signalcount.sell": 1}
    with pytest.raises(ConfigError, match=r"plugins\.signalcount.*log_every"):
        start({"log_every": 0})
