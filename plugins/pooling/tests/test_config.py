"""The plugin's section: defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from sltrader_plugins import ConfigError, PluginSettings
from sltrader_pooling.config import MIB, PoolingConfig


def parse(section: dict[str, object], name: str = "pooling") -> PoolingConfig:
    """What ``on_start`` does with the section of the plugin loaded as ``name``."""
    return PluginSettings(name, section).parse(PoolingConfig)


def test_defaults() -> None:
    config = parse({})
    assert config == PoolingConfig()
    assert config.max_idle_builds is None  # the host's workers + 1
    assert config.max_pooled_bytes == 8 * MIB


def test_every_key_is_read() -> None:
    config = parse(
        {
            "max_idle_bytes": MIB,
            "max_idle_builds": 3,
            "max_pooled_bytes": 64,
            "poison": True,
        }
    )
    assert (config.max_idle_bytes, config.max_idle_builds) == (MIB, 3)
    assert (config.max_pooled_bytes, config.poison) == (64, True)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_idle_bytes": -1}, "'plugins.pooling.max_idle_bytes': expected an integer >= 0"),
        ({"max_idle_builds": -2}, "'plugins.pooling.max_idle_builds': expected an integer >= 0"),
        ({"max_pooled_bytes": 0}, "'plugins.pooling.max_pooled_bytes': expected an integer >= 1"),
        # Size classes are gone (docs/pooling.md): an old file says so at start-up.
        ({"classes_per_doubling": 4}, "'plugins.pooling.classes_per_doubling': unknown key"),
        ({"poison": "yes"}, "'plugins.pooling.poison': expected true or false, got 'yes'"),
        ({"max_idle_byte": 10}, "'plugins.pooling.max_idle_byte': unknown key; did you mean "),
    ],
)
def test_errors_are_one_line_naming_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(section)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_errors_name_the_section_the_plugin_was_loaded_under() -> None:
    with pytest.raises(ConfigError, match=r"^'plugins\.other\.max_idle_bytes'"):
        parse({"max_idle_bytes": -3}, name="other")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match=r"^'max_pooled_bytes': expected an integer >= 1"):
        PoolingConfig(max_pooled_bytes=0)
