"""The plugin's section: defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from sltrader_batching.config import BatchingConfig
from sltrader_plugins import ConfigError, PluginSettings


def parse(section: dict[str, object], name: str = "batching") -> BatchingConfig:
    """What ``on_start`` does with the section of the plugin loaded as ``name``."""
    return PluginSettings(name, section).parse(BatchingConfig)


def test_defaults_are_valid_and_documented():
    config = parse({})
    assert config == BatchingConfig()
    assert config.max_batch_size >= 2
    assert config.queue_limit >= config.max_batch_size
    assert config.max_wait_s == config.max_wait_ms / 1000.0
    assert config.timeout_s == config.timeout_ms / 1000.0


def test_every_key_is_read():
    section = {
        "max_batch_size": 8,
        "max_wait_ms": 1,  # an integer is a number
        "queue_limit": 64,
        "timeout_ms": 250.5,
    }
    config = parse(section)
    assert (config.max_batch_size, config.max_wait_ms) == (8, 1.0)
    assert (config.queue_limit, config.timeout_ms) == (64, 250.5)
    assert isinstance(config.max_wait_ms, float)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_batch_size": "big"}, r"'plugins\.batching\.max_batch_size': expected an integer"),
        ({"max_batch_size": 0}, r"'plugins\.batching'.*'max_batch_size' must be an integer >= 1"),
        ({"max_batch_size": True}, r"'plugins\.batching\.max_batch_size': expected an integer"),
        ({"max_wait_ms": -1}, r"'max_wait_ms' must be a finite number >= 0"),
        ({"max_wait_ms": float("nan")}, r"'max_wait_ms' must be a finite number"),
        ({"max_wait_ms": "2"}, r"'plugins\.batching\.max_wait_ms': expected a number"),
        ({"timeout_ms": 0}, r"'timeout_ms' must be a finite number > 0"),
        ({"timeout_ms": float("inf")}, r"'timeout_ms' must be a finite number"),
        ({"queue_limit": 0}, r"'queue_limit' must be an integer >= 1"),
        ({"queue_limit": 4, "max_batch_size": 8}, r"'queue_limit' must be >= 'max_batch_size'"),
        ({"max_batch": 8}, r"'plugins\.batching': unknown key\(s\) \['max_batch'\]"),
    ],
)
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        parse(section)


def test_errors_name_the_section_the_plugin_was_loaded_under():
    with pytest.raises(ConfigError, match=r"'plugins\.other\.max_batch_size'"):
        parse({"max_batch_size": "big"}, name="other")


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match="'max_batch_size'"):
        BatchingConfig(max_batch_size=1.5)  # type: ignore[arg-type]
