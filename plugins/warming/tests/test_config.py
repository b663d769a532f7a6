"""The plugin's section: defaults, and errors that name the key."""

from __future__ import annotations

import math

import pytest

from sltrader_plugins import ConfigError, PluginSettings
from sltrader_warming.config import WarmingConfig

SECTION = "plugins.warming"


def parse(section: dict[str, object], name: str = "warming") -> WarmingConfig:
    """What ``on_start`` does with the section of the plugin loaded as ``name``."""
    return PluginSettings(name, section).parse(WarmingConfig)


def test_defaults() -> None:
    config = parse({})
    assert config == WarmingConfig()
    assert config.higher_timeframes is None  # the host's confirm timeframes


def test_every_documented_key_is_accepted() -> None:
    config = parse(
        {
            "warm_threshold": 3,  # an integer is a number
            "cooldown_s": 45.5,
            "top_k": 64,
            "higher_timeframes": ["5m", "4h"],
            "request_budget": 100,
            "max_parallel": 2,
            "scan_weight": 2,
            "signal_weight": 8,
            "recency_candles": 2,
            "max_tracked": 1024,
        }
    )
    assert config.warm_threshold == 3.0 and isinstance(config.warm_threshold, float)
    assert config.higher_timeframes == ("5m", "4h")
    assert config.request_budget == 100


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"top_k": "many"}, "plugins.warming.top_k"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "plugins.warming.top_k"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"warm_threshold": math.nan}, "warm_threshold"),
        ({"warm_threshold": math.inf}, "warm_threshold"),
        ({"request_budget": -5}, "request_budget"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 1000}, "max_parallel"),
        ({"scan_weight": 16}, "scan_weight"),
        ({"scan_weight": 0}, "scan_weight"),
        ({"signal_weight": 16}, "signal_weight"),
        ({"warm_threshold": 256}, "warm_threshold"),
        ({"max_tracked": 4}, "max_tracked"),
        ({"higher_timeframes": "5m"}, "plugins.warming.higher_timeframes"),
        ({"higher_timeframes": ["5m", "5x"]}, "higher_timeframes"),
        ({"warmth": 3}, "warmth"),
        ({"top_kk": 3}, "did you mean 'top_k'?"),
    ],
)
def test_errors_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(section)
    message = str(info.value)
    assert key in message
    assert SECTION in message
    assert "\n" not in message and "Attribute(" not in message


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"scan_weight": 16}, "'plugins.warming.scan_weight': expected an integer in [1, 15]"),
        (
            {"signal_weight": 16},
            "'plugins.warming.signal_weight': expected an integer in [1, 15], got 16",
        ),
        (
            {"higher_timeframes": ["5m", "5x"]},
            "'plugins.warming.higher_timeframes': expected a list of timeframes such as",
        ),
        ({"warm_threshold": -1}, "'plugins.warming.warm_threshold': expected a finite number"),
    ],
)
def test_errors_say_what_was_expected(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(section)
    assert str(info.value).startswith(message)


def test_the_weights_bounds_are_accepted() -> None:
    config = parse({"scan_weight": 15, "signal_weight": 1, "warm_threshold": 255})
    assert (config.scan_weight, config.signal_weight) == (15, 1)


def test_errors_name_the_section_the_plugin_was_loaded_under() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.other\.top_k"):
        parse({"top_k": "many"}, name="other")
