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
    assert config.max_wait_s == config.max_wait_ms / 1000.0
    assert config.timeout_s == config.timeout_ms / 1000.0


def test_every_key_is_read():
    section = {
        "max_batch_size": 8,
        "max_wait_ms": 1,  # an integer is a number
        "timeout_ms": 250.5,
    }
    config = parse(section)
    assert (config.max_batch_size, config.max_wait_ms) == (8, 1.0)
    assert config.timeout_ms == 250.5
    assert isinstance(config.max_wait_ms, float)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_batch_size": "big"}, "'plugins.batching.max_batch_size': expected an integer"),
        (
            {"max_batch_size": 0},
            "'plugins.batching.max_batch_size': expected an integer in [1, 65536], got 0",
        ),
        ({"max_batch_size": True}, "'plugins.batching.max_batch_size': expected an integer"),
        (
            {"max_wait_ms": -1},
            "'plugins.batching.max_wait_ms': expected a finite number in [0, 3600000], got -1.0",
        ),
        ({"max_wait_ms": float("nan")}, "'plugins.batching.max_wait_ms': expected a finite"),
        ({"max_wait_ms": "2"}, "'plugins.batching.max_wait_ms': expected a number"),
        (
            {"timeout_ms": 0},
            "'plugins.batching.timeout_ms': expected a finite number in (0, 3600000], got 0.0",
        ),
        ({"timeout_ms": float("inf")}, "'plugins.batching.timeout_ms': expected a finite"),
        # Beyond threading.TIMEOUT_MAX a wait would raise OverflowError in the batcher.
        ({"timeout_ms": 1e300}, "'plugins.batching.timeout_ms': expected a finite number in"),
        # the bounded queue is gone (it needed ~1000 concurrent callers to ever trigger)
        ({"queue_limit": 64}, "'plugins.batching.queue_limit': unknown key"),
        ({"max_batch": 8}, "'plugins.batching.max_batch': unknown key; did you mean "),
        ({"max_batch": 8}, "did you mean 'max_batch_size'?"),
    ],
)
def test_errors_name_the_key(section, message):
    with pytest.raises(ConfigError) as error:
        parse(section)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_errors_name_the_section_the_plugin_was_loaded_under():
    with pytest.raises(ConfigError, match=r"'plugins\.other\.max_batch_size'"):
        parse({"max_batch_size": "big"}, name="other")


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match=r"^'max_batch_size': expected an integer"):
        BatchingConfig(max_batch_size=1.5)  # type: ignore[arg-type]
