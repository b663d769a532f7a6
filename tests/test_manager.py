"""Plugin discovery, choice, validation and fault isolation, against real entry points."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from sltrader_plugins import hookimpl
from sltrader_plugins.config import Config, ConfigError
from sltrader_plugins.manager import (
    ENV_PLUGINS,
    PluginError,
    PluginManager,
    parse_names,
    resolve_enable_list,
)

SCAN_PLUGIN = """
from sltrader_plugins import hookimpl

class Plugin:
    @hookimpl
    def on_scan_complete(self, symbols, timeframe, now):
        return len(symbols)
"""

BROKEN_IMPORT = """
raise ImportError("needs libfoo")
"""

UNKNOWN_HOOK = """
from sltrader_plugins import hookimpl

class Plugin:
    @hookimpl
    def on_scan_completed(self, symbols):
        pass
"""

WRONG_ARGUMENT = """
from sltrader_plugins import hookimpl

class Plugin:
    @hookimpl
    def on_signal(self, symbol, sygnal):
        pass
"""

MODULE_PLUGIN = """
from sltrader_plugins import hookimpl

@hookimpl
def on_signal(signal):
    return signal
"""


@pytest.fixture
def load(fake_entry_points):
    """Load the fake site's plugins into a new manager; ``environ`` defaults to empty."""

    def run(config=None, cli=None, environ=None):
        manager = PluginManager()
        manager.load(
            config or Config(),
            cli=cli,
            environ={} if environ is None else environ,
            entry_points=fake_entry_points(),
        )
        return manager

    return run


def states(manager: PluginManager) -> dict[str, tuple[bool, str | None]]:
    return {info.name: (info.active, info.reason) for info in manager.plugins()}


def test_every_installed_plugin_loads_by_default(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN, version="1.2")
    fake_dist("beta", SCAN_PLUGIN)
    manager = load()
    infos = {info.name: info for info in manager.plugins()}
    assert infos["alpha"].active and infos["beta"].active
    assert infos["alpha"].distribution == "fake-alpha"
    assert infos["alpha"].version == "1.2"
    assert infos["alpha"].hooks == ("on_scan_complete",)
    assert manager.hook.on_scan_complete(symbols=["A", "B"], timeframe="1m", now=0.0) == [2, 2]


def test_discovery_without_explicit_entry_points_finds_the_fake_site(fake_dist):
    fake_dist("alpha", SCAN_PLUGIN)
    manager = PluginManager()
    manager.load(Config(), cli="alpha", environ={})
    assert manager.active_names() == ["alpha"]


@pytest.mark.parametrize(
    ("cli", "environ", "file", "expected", "source"),
    [
        (None, {}, None, ["alpha", "beta"], "default"),
        (None, {}, ("beta",), ["beta"], "file"),
        (None, {ENV_PLUGINS: "alpha"}, ("beta",), ["alpha"], "environment"),
        ("beta", {ENV_PLUGINS: "alpha"}, ("alpha",), ["beta"], "cli"),
        (None, {ENV_PLUGINS: ""}, ("alpha",), [], "environment"),
        ("", {ENV_PLUGINS: "alpha"}, None, [], "cli"),
        (None, {ENV_PLUGINS: " alpha , beta ,"}, None, ["alpha", "beta"], "environment"),
    ],
)
def test_enable_list_precedence(fake_dist, load, cli, environ, file, expected, source):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("beta", SCAN_PLUGIN)
    manager = load(Config(enable=file), cli=cli, environ=environ)
    assert manager.active_names() == expected
    assert resolve_enable_list(Config(enable=file), cli, environ).source == source
    for name, (active, reason) in states(manager).items():
        if not active:
            assert reason == f"not in the enable list (from {source})", name


def test_unknown_name_in_enable_list_names_the_installed_plugins(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("beta", SCAN_PLUGIN)
    with pytest.raises(PluginError, match=r"nosuch.*installed plugins: alpha, beta"):
        load(environ={ENV_PLUGINS: "alpha,nosuch"})


def test_disabled_in_config_is_inactive_unless_chosen_for_this_run(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("beta", SCAN_PLUGIN)
    config = Config(plugins={"alpha": {"enabled": False}})
    assert states(load(config)) == {"alpha": (False, "disabled by config"), "beta": (True, None)}
    # a file enable list does not override the section, a run's choice does
    assert load(Config(enable=("alpha",), plugins=config.plugins)).active_names() == []
    assert load(config, cli="alpha").active_names() == ["alpha"]
    assert load(config, environ={ENV_PLUGINS: "alpha"}).active_names() == ["alpha"]


SIZED_PLUGIN = """
import attrs
from sltrader_plugins import hookimpl

@attrs.frozen
class Sized:
    size: int = 1

class Plugin:
    def __init__(self):
        self.config = None

    @hookimpl
    def on_start(self, settings):
        self.config = settings.parse(Sized)

    @hookimpl
    def report_metrics(self):
        return {"size": self.config.size}
"""


def test_the_entry_point_name_chooses_the_section_and_the_metric_prefix(fake_dist, load):
    # The same plugin code under two entry-point names: each reads its own section,
    # is enabled by its own name, and reports under its own prefix.
    fake_dist("alpha", SIZED_PLUGIN)
    fake_dist("beta", SIZED_PLUGIN)
    config = Config(
        plugins={"alpha": {"size": 3}, "beta": {"size": 5, "enabled": False}, "gamma": {}}
    )
    manager = load(config)
    manager.start(services=None)  # type: ignore[arg-type]
    assert manager.active_names() == ["alpha"]
    assert manager.metrics() == {"alpha.size": 3.0}
    # named for this run, a plugin disabled in the file runs fully (and never sees "enabled")
    manager = load(config, cli="alpha,beta")
    manager.start(services=None)  # type: ignore[arg-type]
    assert manager.metrics() == {"alpha.size": 3.0, "beta.size": 5.0}


def test_a_plugin_not_chosen_is_never_imported(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("broken", BROKEN_IMPORT)
    manager = load(cli="alpha")
    assert "fake_broken" not in sys.modules
    assert states(manager)["broken"] == (False, "not in the enable list (from cli)")


def test_import_failure_is_reported_and_the_host_starts_without_it(fake_dist, load, caplog):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("broken", BROKEN_IMPORT)
    with caplog.at_level(logging.ERROR):
        manager = load()
    assert manager.active_names() == ["alpha"]
    active, reason = states(manager)["broken"]
    assert not active
    assert reason == "failed to import: ImportError: needs libfoo"
    assert "'broken' (fake-broken) not loaded" in caplog.text


def test_import_failure_is_an_error_in_strict_mode(fake_dist, load):
    fake_dist("broken", BROKEN_IMPORT)
    with pytest.raises(PluginError, match=r"'broken' .*needs libfoo"):
        load(Config(strict=True))


def test_missing_entry_point_target_is_an_import_failure(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN, target="NoSuchClass")
    reason = states(load())["alpha"][1]
    assert reason is not None and reason.startswith("failed to import: AttributeError")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (UNKNOWN_HOOK, "unknown hook(s) on_scan_completed; known hooks: after_analyze_symbol"),
        (WRONG_ARGUMENT, "invalid hook implementation"),
    ],
)
def test_invalid_hook_implementations_are_rejected(fake_dist, load, source, message):
    fake_dist("bad", source)
    fake_dist("alpha", SCAN_PLUGIN)
    manager = load()
    active, reason = states(manager)["bad"]
    assert not active and reason is not None and message in reason
    assert manager.active_names() == ["alpha"]
    assert manager.hooks_of("bad") == ()
    with pytest.raises(PluginError, match=message.split("(")[0]):
        load(Config(strict=True))


def test_wrong_argument_message_names_the_argument(fake_dist, load):
    fake_dist("bad", WRONG_ARGUMENT)
    reason = states(load())["bad"][1]
    assert reason is not None and "sygnal" in reason


def test_a_module_entry_point_registers_the_module(site, load):
    (site / "fake_mod.py").write_text(MODULE_PLUGIN)
    info = site / "fake_mod-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-mod\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sltrader]\nmod = fake_mod\n")
    manager = load()
    assert manager.active_names() == ["mod"]
    assert manager.hook.on_signal(signal="ETH/USDT") == ["ETH/USDT"]


def test_a_class_entry_point_is_instantiated_per_manager(fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN)
    first, second = load(), load()
    assert first._pm.get_plugin("alpha") is not second._pm.get_plugin("alpha")


def test_duplicate_entry_point_names_keep_the_first(site, fake_dist, load):
    fake_dist("alpha", SCAN_PLUGIN)
    info = site / "other_alpha-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-alpha\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[sltrader]\nalpha = fake_alpha:Plugin\n")
    manager = load()
    assert manager.active_names() == ["alpha"]
    assert len(manager._pm.get_plugins()) == 1


# -- fault isolation ----------------------------------------------------------------------


class Raising:
    @hookimpl
    def on_scan_complete(self, symbols):
        raise RuntimeError("boom")

    @hookimpl
    def before_predict(self, features):
        raise RuntimeError("boom")


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_scan_complete(self, symbols):
        self.calls += 1
        return "counted"


class Predicting:
    @hookimpl
    def before_predict(self, features):
        return 0.25


def test_a_raising_plugin_does_not_stop_the_others_and_is_logged_once(caplog):
    manager = PluginManager()
    counting = Counting()
    # by name: "counting" runs after "raising"
    manager.register(counting, "counting")
    manager.register(Raising(), "raising")
    with caplog.at_level(logging.ERROR):
        for _ in range(50):
            assert manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0) == ["counted"]
    assert counting.calls == 50
    assert manager.faults()["raising.on_scan_complete"] == 50
    logged = [r for r in caplog.records if "raised in hook 'on_scan_complete'" in r.message]
    assert len(logged) == 1 and "'raising'" in logged[0].message


def test_a_raising_firstresult_hook_lets_the_next_plugin_or_the_host_answer():
    manager = PluginManager()
    manager.register(Raising(), "raising")
    kwargs = {"symbol": "X", "features": None, "model": None}
    assert manager.hook.before_predict(**kwargs) is None  # the host predicts itself
    manager.register(Predicting(), "predicting")
    answer = manager.hook.before_predict(**kwargs)
    assert answer == 0.25 and answer.plugin == "predicting"


def test_fault_counting_is_exact_under_many_threads(caplog):
    manager = PluginManager()
    manager.register(Raising(), "raising")
    threads, calls = 16, 500
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(calls):
            manager.hook.before_predict(symbol="X", features=None, model=None)

    with caplog.at_level(logging.ERROR):
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    assert manager.faults() == {"raising.before_predict": threads * calls}
    assert sum("raised in hook" in r.message for r in caplog.records) == 1


class FailsToStart:
    """Fails in ``on_start``; records its later calls (a raise there would be caught by
    the fault guard and only counted: it could not fail a test)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def on_start(self, services):
        raise RuntimeError("cannot start")

    @hookimpl
    def on_scan_complete(self, symbols):
        self.calls.append("on_scan_complete")


class RefusesConfig:
    @hookimpl
    def on_start(self, services):
        raise ConfigError("'plugins.x.size': expected an integer, got 'big'")


def test_a_plugin_failing_on_start_is_unregistered():
    manager = PluginManager()
    fails, counting = FailsToStart(), Counting()
    manager.register(fails, "fails")
    manager.register(counting, "counting")
    manager.start(services=None)  # type: ignore[arg-type]
    assert manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0) == ["counted"]
    assert fails.calls == []  # its hooks are never called again
    assert manager.hooks_of("fails") == ()  # not registered any more
    assert manager.faults() == {"fails.on_start": 1}  # and nothing else of it ran
    assert states(manager)["fails"] == (False, "failed in on_start")
    assert manager.active_names() == ["counting"]
    manager.shutdown()


def test_a_configuration_error_on_start_stops_start_up():
    manager = PluginManager()
    manager.register(RefusesConfig(), "x")
    with pytest.raises(ConfigError, match=r"plugins\.x\.size"):
        manager.start(services=None)  # type: ignore[arg-type]


def test_registering_twice_is_an_error():
    manager = PluginManager()
    manager.register(Counting(), "counting")
    with pytest.raises(PluginError):
        manager.register(Counting(), "counting")


def test_parse_names():
    assert parse_names("") == ()
    assert parse_names("a, b,,c ") == ("a", "b", "c")


class WithDefaults:
    """Hook implementations with defaulted arguments: pluggy passes those by keyword."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    @hookimpl
    def on_scan_complete(self, symbols, now=0.0):
        self.seen.append((symbols[0], now))

    @hookimpl
    def before_analyze_symbol(self, symbol, timeframe="?"):
        raise RuntimeError(f"boom {symbol} {timeframe}")


def test_the_guard_passes_keyword_arguments_and_still_isolates_faults():
    manager = PluginManager()
    plugin = WithDefaults()
    manager.register(plugin, "defaults")
    manager.hook.on_scan_complete(symbols=["BTC_USDT"], timeframe="1m", now=60.0)
    manager.hook.before_analyze_symbol(symbol="BTC_USDT", timeframe="1m")
    assert plugin.seen in ([("BTC_USDT", 60.0)], [("BTC_USDT", 0.0)])
    assert manager.faults() == {"defaults.before_analyze_symbol": 1}


class ConfigErrorLater:
    @hookimpl
    def on_scan_complete(self):
        raise ConfigError("'plugins.x.size': expected an integer")


def test_a_configuration_error_after_start_is_an_isolated_fault():
    manager = PluginManager()
    manager.register(ConfigErrorLater(), "x")
    assert manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0) == []
    assert manager.faults() == {"x.on_scan_complete": 1}


def test_a_misspelt_plugin_section_is_an_error_naming_the_nearest(fake_dist, load):
    fake_dist("batching", SCAN_PLUGIN)
    with pytest.raises(ConfigError, match=r"'plugins\.batchng'.*did you mean 'plugins\.batching'"):
        load(Config(plugins={"batchng": {"max_batch_size": 8}}))


def test_the_section_of_a_plugin_not_installed_is_only_noted(fake_dist, load, caplog):
    fake_dist("batching", SCAN_PLUGIN)
    with caplog.at_level("INFO"):
        manager = load(Config(plugins={"warming": {"top_k": 8}}))
    assert manager.active_names() == ["batching"]
    assert "'plugins.warming': no plugin of that name is installed" in caplog.text


# -- the order of plugins within a hook ------------------------------------------------


def named(name: str, log: list[str], answer: object = None, **marks: bool) -> object:
    """A plugin that logs its name in ``on_scan_complete`` and ``before_predict``."""

    @hookimpl(**marks)
    def on_scan_complete(self):
        log.append(name)

    @hookimpl(**marks)
    def before_predict(self):
        log.append(name)
        return answer

    return type(
        name, (), {"on_scan_complete": on_scan_complete, "before_predict": before_predict}
    )()


@pytest.mark.parametrize("registration", [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"]])
def test_every_hook_calls_the_plugins_by_name_whatever_the_registration_order(registration):
    manager, log = PluginManager(), []
    for name in registration:
        manager.register(named(name, log), name)
    manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0)
    manager.hook.before_predict(symbol="X", features=None, model=None)
    assert log == ["a", "b", "c"] * 2


def test_tryfirst_ones_come_first_then_the_others_each_by_name():
    manager, log = PluginManager(), []
    marks = [("d", {}), ("c", {"tryfirst": True}), ("b", {}), ("a", {"tryfirst": True})]
    for name, mark in marks:
        manager.register(named(name, log, **mark), name)
    manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0)
    assert log == ["a", "c", "b", "d"]


def test_trylast_is_refused_pluggy_would_call_those_against_the_name_order():
    manager = PluginManager()
    with pytest.raises(PluginError, match=r"trylast implementation\(s\) before_predict"):
        manager.register(named("late", [], trylast=True), "late")
    assert manager.active_names() == []


def test_no_plugin_is_registered_after_start():
    manager = PluginManager()
    manager.register(named("a", []), "a")
    manager.start(services=None)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="have been started"):
        manager.register(named("b", []), "b")
    assert manager.active_names() == ["a"]


def test_a_plugin_registered_then_blocked_by_the_enable_list_is_forgotten(
    fake_dist, fake_entry_points
):
    fake_dist("alpha", SCAN_PLUGIN)
    fake_dist("beta", SCAN_PLUGIN)
    manager, log = PluginManager(), []
    manager.register(named("beta", log), "beta")  # directly, before load
    manager.load(Config(), cli="alpha", environ={}, entry_points=fake_entry_points())
    manager.register(named("gamma", log), "gamma")  # re-registers the others: beta is gone
    manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0)
    assert log == ["gamma"]


def test_an_observer_of_an_answer_hook_marked_tryfirst_sees_every_call():
    manager, log = PluginManager(), []
    manager.register(named("answers", log, answer=0.5), "answers")
    manager.register(named("zobserver", log, tryfirst=True), "zobserver")
    for _ in range(3):
        assert manager.hook.before_predict(symbol="X", features=None, model=None) == 0.5
    assert log == ["zobserver", "answers"] * 3


class Wrapping:
    @hookimpl(wrapper=True)
    def before_predict(self):
        yield
        return 2.5  # whatever the plugins answered


def test_hook_wrappers_are_refused_they_could_replace_any_answer_unchecked():
    manager = PluginManager()
    with pytest.raises(PluginError, match=r"hook wrapper.*before_predict"):
        manager.register(Wrapping(), "wrapping")
    assert manager.hook.before_predict(symbol="X", features=None, model=None) is None


class Hangs:
    def __init__(self) -> None:
        self.release = threading.Event()

    @hookimpl
    def on_scan_complete(self):
        self.release.wait(30)

    @hookimpl
    def before_scan(self):
        pass

    @hookimpl
    def on_signal(self):
        pass

    @hookimpl
    def report_metrics(self):
        return {"x": 1}


def test_a_hung_main_loop_hook_logs_one_line_and_counts_every_skip(caplog):
    manager, plugin = PluginManager(hook_timeout_s=0.05), Hangs()
    manager.register(plugin, "hangs")
    try:
        with caplog.at_level(logging.ERROR):
            manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0)
            for _ in range(3):
                manager.hook.before_scan(symbols=[], timeframe="1m", now=0.0)
                manager.hook.on_signal(signal=None)
                assert manager.metrics() == {}
    finally:
        plugin.release.set()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "skipped until that call returns" in errors[0].getMessage()
    assert manager.faults() == {
        "hangs.before_scan": 3,
        "hangs.on_scan_complete": 1,
        "hangs.on_signal": 3,
        "hangs.report_metrics": 3,
    }


def hook_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sltrader-hooks-")]


def test_metrics_after_shutdown_leave_no_hook_thread_behind():
    before = len(hook_threads())
    manager = PluginManager()
    manager.register(Hangs(), "reports")
    manager.shutdown()
    for _ in range(5):
        assert manager.metrics() == {"reports.x": 1.0}
    deadline = time.monotonic() + 5
    while len(hook_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(hook_threads()) == before


class NamedBy:
    """Reports one good counter and one under ``name``."""

    def __init__(self, name: object) -> None:
        self.name = name

    @hookimpl
    def report_metrics(self):
        return {"good": 1, self.name: 2.0}


@pytest.mark.parametrize("name", [7, 2.5, None, b"bytes", ("a", "b"), True])
def test_a_metric_whose_name_is_not_a_string_is_refused_with_the_plugins_fault(name, caplog):
    # A finite number under a name that is not a string: the entry is refused (never
    # reported as "names.7"), the plugin's other counters kept, and the error says which.
    manager = PluginManager()
    manager.register(NamedBy(name), "names")
    try:
        with caplog.at_level(logging.ERROR):
            assert manager.metrics() == {"names.good": 1.0}
    finally:
        manager.shutdown()
    assert manager.faults() == {"names.report_metrics": 1}
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"returned {name!r}: 2.0 (not a name and a finite number)" in errors[0]
    assert "'report_metrics'" in errors[0] and "'names'" in errors[0]


class Saying:
    def __init__(self, line: object) -> None:
        self.line = line

    @hookimpl
    def report_summary(self):
        return self.line


@pytest.mark.parametrize("line", [None, 7, b"bytes", "two\nlines", "x" * 201])
def test_a_summary_that_is_not_one_short_line_is_the_plugins_fault(line):
    manager = PluginManager()
    manager.register(Saying("saved 3 calls"), "good")
    manager.register(Saying(line), "bad")
    try:
        assert manager.summaries() == {"good": "saved 3 calls"}
    finally:
        manager.shutdown()
    assert manager.faults() == ({} if line is None else {"bad.report_summary": 1})


def test_summaries_are_in_plugin_name_order():
    manager = PluginManager()
    for name in ("zeta", "alpha", "mid"):
        manager.register(Saying(f"{name} line" + "x" * (200 - len(name) - 5)), name)
    try:
        assert list(manager.summaries()) == ["alpha", "mid", "zeta"]
    finally:
        manager.shutdown()


def test_loading_after_start_is_refused():
    """The call sites fixed their hooks at start: plugins loaded later would not be
    called, or called unguarded."""
    manager = PluginManager()
    manager.start(services=None)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="started"):
        manager.load(Config(), entry_points=[])
