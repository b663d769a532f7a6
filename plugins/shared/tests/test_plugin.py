"""The plugin as a host sees it: entry point, hooks, start-up, and nothing before it."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading
from typing import Any

import pytest
from shared_testkit import T0, ConstantModel, FakeClock, warnings

from sltrader_plugins import Config, ConfigError, ExchangeRequest, HostServices, KlineFetch
from sltrader_plugins.manager import PluginManager
from sltrader_shared import shared as shared_module
from sltrader_shared.config import SharedConfig
from sltrader_shared.link import RedisLink
from sltrader_shared.plugin import SharedPlugin


def test_entry_point_is_installed() -> None:
    eps = importlib.metadata.entry_points(group="sltrader")
    (ep,) = [ep for ep in eps if ep.name == "shared"]
    assert ep.load() is SharedPlugin


def test_registers_only_known_hooks() -> None:
    manager = PluginManager()
    manager.register(SharedPlugin(), "shared")
    assert set(manager.hooks_of("shared")) == {
        "on_start",
        "before_scan",
        "serve_klines",
        "after_fetch_klines",
        "pace_exchange_request",
        "report_metrics",
        "report_summary",
        "on_shutdown",
    }


def test_every_hook_is_a_no_op_before_start() -> None:
    plugin = SharedPlugin()
    fetch = KlineFetch("X", "1m", 10, T0)
    assert plugin.serve_klines(fetch) is None
    plugin.after_fetch_klines(fetch, None)
    plugin.pace_exchange_request(ExchangeRequest(1, fetch))
    plugin.before_scan()
    assert plugin.report_metrics() is None
    plugin.on_shutdown()


def test_a_bad_setting_stops_start_up_with_the_key_named() -> None:
    manager = PluginManager()
    manager.config = Config.from_mapping({"plugins": {"shared": {"burst": 0}}})
    manager.register(SharedPlugin(), "shared")
    services = HostServices(
        model=ConstantModel(), cache=None, clock=FakeClock(), base_timeframe="1m", workers=1
    )
    with pytest.raises(ConfigError, match=r"'plugins\.shared\.burst'"):
        manager.start(services)


def started(url: str, namespace: str) -> tuple[PluginManager, SharedPlugin]:
    """The plugin registered as ``shared`` with ``url`` and ``namespace``, and started."""
    manager = PluginManager()
    manager.config = Config.from_mapping(
        {"plugins": {"shared": {"url": url, "namespace": namespace}}}
    )
    plugin = SharedPlugin()
    manager.register(plugin, "shared")
    services = HostServices(
        model=ConstantModel(), cache=None, clock=FakeClock(), base_timeframe="1m", workers=1
    )
    manager.start(services)
    return manager, plugin


def test_start_without_redis_costs_one_bounded_attempt_then_the_trader_goes_alone(
    namespace, caplog
) -> None:
    # Start marks the trader present (traders started together share from their first
    # scan); nothing listens on port 1: one refused attempt, one line, and no fault.
    manager, plugin = started("redis://127.0.0.1:1/0", namespace)
    assert plugin.shared is not None
    metrics = plugin.report_metrics()
    assert metrics["redis_errors"] == 1 and metrics["stepped_aside"] == 1
    assert len(warnings(caplog)) == 1 and manager.faults() == {}
    manager.shutdown()


def test_without_a_url_it_does_not_share_and_says_so_once(caplog) -> None:
    # A Redis server the trader was not pointed at may hold another market's series.
    manager = PluginManager()
    plugin = SharedPlugin()
    manager.register(plugin, "shared")
    services = HostServices(
        model=ConstantModel(), cache=None, clock=FakeClock(), base_timeframe="1m", workers=1
    )
    with caplog.at_level("INFO", logger="sltrader_shared"):
        manager.start(services)
    assert plugin.shared is None
    assert plugin.serve_klines(KlineFetch("X", "1m", 10, T0)) is None
    assert [r.getMessage() for r in caplog.records] == [
        "plugin 'shared': no url in [plugins.shared]: not sharing, this trader fetches alone"
    ]
    assert manager.summaries() == {"shared": "not sharing: no url"}
    manager.shutdown()
    assert plugin.report_summary() == "not sharing: no url"
    assert SharedPlugin().report_summary() is None  # never started


def test_a_link_needs_a_url() -> None:
    with pytest.raises(ValueError, match="url"):
        RedisLink(SharedConfig(), "shared")


def test_a_trader_that_does_not_share_never_imports_redis() -> None:
    # In a fresh interpreter: this one's tests have imported redis long ago.
    code = (
        "import sys\n"
        "from sltrader_plugins import Plugins\n"
        "from sltrader_plugins import WallClock\n"
        "with Plugins.load(plugins='shared') as plugins:\n"
        "    plugins.start(model=None, cache=None, clock=WallClock(), base_timeframe='1m', "
        "workers=1)\n"
        "    assert plugins.active() == ['shared'] and plugins.faults() == {}\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_before_scan_hands_over_to_its_thread_only_when_redis_is_due(
    redis_server, namespace, monkeypatch
) -> None:
    """A fast trader pays the hand-over to the plugin's thread once a second at most (a
    Redis call, bounded), not at every scan."""
    monkeypatch.setattr(shared_module, "MARK_EVERY_S", 3600.0)
    manager, plugin = started(redis_server.url, namespace)
    assert plugin.shared is not None
    seen: list[bool] = []
    mark = plugin.shared.mark_present

    def spy(*args: Any, **kwargs: Any) -> int:
        seen.append(threading.current_thread() is threading.main_thread())
        return mark(*args, **kwargs)

    monkeypatch.setattr(plugin.shared, "mark_present", spy)
    for _ in range(3):
        manager.hook.before_scan(symbols=["X"], timeframe="1m", now=T0)
    assert seen == [False, True, True]  # due at the first scan only
    assert manager.faults() == {} and plugin.report_metrics()["alone_scans"] == 3
    manager.shutdown()
