"""The plugin's section: defaults, and one clear line for every bad value."""

from __future__ import annotations

import math

import pytest

from sltrader_plugins import ConfigError, PluginSettings
from sltrader_shared.config import SharedConfig


def parse(section: dict[str, object], name: str = "shared") -> SharedConfig:
    """What ``on_start`` does with the section of the plugin loaded as ``name``."""
    return PluginSettings(name, section).parse(SharedConfig)


def test_defaults() -> None:
    config = parse({})
    assert config == SharedConfig()
    assert config.url is None and config.namespace == "sltrader"
    assert config.requests_per_minute == 0  # no pacing unless the budget is set


def test_every_documented_key_is_accepted() -> None:
    config = parse(
        {
            "url": "rediss://user:pw@redis.internal:6380/2",
            "namespace": "binance.spot:v1",
            "lease_ms": 2000,
            "wait_ms": 0,
            "timeout_ms": 50,
            "requests_per_minute": 1200,  # an integer is a number
            "burst": 20,
            "retry_s": 0.5,
            "max_pace_wait_ms": 0,
        }
    )
    assert config.requests_per_minute == 1200.0 and isinstance(config.requests_per_minute, float)
    assert parse({"url": "unix:///run/redis.sock?db=1"}).url.startswith("unix:")
    assert parse({"url": "redis://localhost"}).url == "redis://localhost"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"url": "http://127.0.0.1:6379"}, "url"),
        ({"url": "127.0.0.1:6379"}, "url"),
        ({"url": "redis://:6379/0"}, "url"),
        ({"url": "redis://host:port/0"}, "url"),
        ({"url": "redis://host:6379/zero"}, "url"),
        ({"url": "unix://"}, "url"),
        ({"url": 6379}, "url"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "x" * 65}, "namespace"),
        ({"lease_ms": 10}, "lease_ms"),
        ({"lease_ms": 1.5}, "lease_ms"),
        ({"wait_ms": -1}, "wait_ms"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"timeout_ms": True}, "timeout_ms"),
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"requests_per_minute": math.inf}, "requests_per_minute"),
        ({"requests_per_minute": math.nan}, "requests_per_minute"),
        ({"requests_per_minute": "1200"}, "requests_per_minute"),
        ({"burst": 0}, "burst"),
        ({"retry_s": 0}, "retry_s"),
        ({"max_pace_wait_ms": -5}, "max_pace_wait_ms"),
        ({"lease": 5}, "did you mean 'lease_ms'?"),
    ],
)
def test_errors_name_the_key_in_one_line(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(section)
    message = str(info.value)
    assert key in message and "plugins.shared" in message
    assert "\n" not in message and "Attribute(" not in message


def test_the_section_follows_the_name_the_plugin_is_loaded_under() -> None:
    with pytest.raises(ConfigError, match=r"'plugins\.market_b\.burst'"):
        parse({"burst": 0}, name="market_b")
