"""The configuration file and typed sections."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from sltrader_plugins import (
    Check,
    Plugins,
    SettingError,
    finite,
    integer,
    one_of,
    timeframe,
    timeframe_list,
)
from sltrader_plugins.config import (
    Config,
    ConfigError,
    load_config,
    section_from,
    settings_from_environment,
)
from sltrader_plugins.host.workload import (
    CONFIRM_NEEDED,
    MIN_CANDLES,
    TREND_CANDLES,
    Workload,
    workload_from,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    config = load_config(cwd=tmp_path)
    assert config == Config()
    assert config.enable is None and config.plugin("batching") == {}
    assert config.plugin_enabled("batching")


def test_sltrader_toml_is_found_in_the_working_directory(tmp_path):
    write(
        tmp_path / "sltrader.toml",
        'enable = ["batching"]\nstrict = true\n[host]\nworkers = 4\n'
        "[plugins.batching]\nenabled = false\nmax_batch_size = 16\n",
    )
    config = load_config(cwd=tmp_path)
    assert config.enable == ("batching",)
    assert config.strict is True
    assert config.host == {"workers": 4}
    assert config.plugin("batching") == {"enabled": False, "max_batch_size": 16}
    assert not config.plugin_enabled("batching")
    assert config.source == tmp_path / "sltrader.toml"


def test_pyproject_tool_section(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.sltrader]\nenable = []\n')
    assert load_config(cwd=tmp_path).enable == ()


def test_pyproject_without_a_section_gives_defaults(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert load_config(cwd=tmp_path).enable is None


def test_sltrader_toml_wins_over_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.sltrader]\nenable = ["a"]\n')
    write(tmp_path / "sltrader.toml", 'enable = ["b"]\n')
    assert load_config(cwd=tmp_path).enable == ("b",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enable = 3\n", "'enable': expected a list of plugin names, got 3"),
        ('enable = ["a", 1]\n', "'enable': expected a list of plugin names"),
        ('strict = "yes"\n', "'strict': expected true or false, got 'yes'"),
        ("host = 1\n", "'host': expected a table"),
        ("plugins = 1\n", "'plugins': expected a table of plugin sections"),
        ("[plugins]\nbatching = 2\n", "'plugins.batching': expected a table"),
        (
            "[plugins.batching]\nenabled = 1\n",
            "'plugins.batching.enabled': expected true or false, got 1",
        ),
        ("enabel = []\n", "'enabel': unknown key; did you mean 'enable'?"),
        (
            "colour = 1\n",
            "'colour': unknown key; expected one of 'enable', 'hook_timeout_s', 'host'",
        ),
        ("enable = [\n", "is not valid TOML"),
    ],
)
def test_invalid_files_name_the_key(tmp_path, text, message):
    path = write(tmp_path / "sltrader.toml", text)
    with pytest.raises(ConfigError, match=r"sltrader\.toml") as error:
        load_config(path)
    assert message in str(error.value)


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "missing.toml")


def _positive(_: object, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be positive, got {value}")


@attrs.frozen
class Section:
    enabled: bool = True
    size: int = attrs.field(default=8, validator=_positive)
    wait_ms: float = 2.0
    name: str = "x"
    timeframes: tuple[str, ...] = ("5m",)
    limit: int | None = None


def test_section_from_builds_typed_values():
    section = section_from(
        Section,
        {"size": 4, "wait_ms": 1, "timeframes": ["1h"], "name": "y", "limit": 3},
        "plugins.x",
    )
    assert section == Section(size=4, wait_ms=1.0, timeframes=("1h",), name="y", limit=3)
    assert isinstance(section.wait_ms, float)
    assert section_from(Section, {}, "plugins.x") == Section()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"size": "big"}, "'plugins.x.size': expected an integer, got 'big'"),
        ({"size": True}, "'plugins.x.size': expected an integer, got True"),
        ({"enabled": "no"}, "'plugins.x.enabled': expected true or false"),
        ({"wait_ms": "1"}, "'plugins.x.wait_ms': expected a number"),
        ({"name": 1}, "'plugins.x.name': expected a string"),
        ({"timeframes": "1h"}, "'plugins.x.timeframes': expected a list of strings"),
        ({"limit": "3"}, "'plugins.x.limit': expected"),
        ({"size": 0}, "'plugins.x.size': must be positive, got 0"),
        ({"sise": 1}, "'plugins.x.sise': unknown key; did you mean 'size'?"),
        ({"wait_ms": 1, "tmeframes": []}, "'plugins.x.tmeframes': unknown key; did you mean"),
        ({"zzz": 1}, "'plugins.x.zzz': unknown key; expected one of 'enabled', 'limit', 'name'"),
    ],
)
def test_section_from_names_the_key_and_what_was_expected(values, message):
    with pytest.raises(ConfigError) as error:
        section_from(Section, values, "plugins.x")
    assert message in str(error.value)


# -- files that are not UTF-8 TOML --------------------------------------------------------


def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    path = tmp_path / "sltrader.toml"
    path.write_bytes("[host]\n# caf\u00e9 latency\nworkers = 4\n".encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "not UTF-8" in message and "line 2" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tool = 1\n", "'tool': expected a table, got 1"),
        ("[tool]\nsltrader = 2\n", "'tool.sltrader': expected a table, got 2"),
    ],
)
def test_a_pyproject_whose_tool_is_not_a_table(tmp_path, text, message):
    path = write(tmp_path / "pyproject.toml", text)
    with pytest.raises(ConfigError, match=r"pyproject\.toml") as error:
        load_config(path)
    assert message in str(error.value)


# -- validators: one line naming the key, whoever wrote the validator ----------------------


@attrs.frozen
class Foreign:
    """Fields validated by attrs' own validators (their errors carry the Attribute)."""

    model: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "cheap")))
    count: int = attrs.field(default=1, validator=attrs.validators.instance_of(int))
    size: int = attrs.field(default=1, validator=attrs.validators.ge(1))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "xgboost"}, "'plugins.f.model': must be in ('sgd', 'cheap') (got 'xgboost')"),
        ({"size": 0}, "'plugins.f.size': must be >= 1: 0"),
    ],
)
def test_attrs_validators_errors_are_one_line_naming_the_key(values, message):
    with pytest.raises(ConfigError) as error:
        section_from(Foreign, values, "plugins.f")
    assert str(error.value) == message
    assert "Attribute(" not in str(error.value)


@attrs.frozen
class Required:
    name: str


def test_a_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"^'plugins\.r\.name': missing"):
        section_from(Required, {}, "plugins.r")


@attrs.frozen
class Checked:
    count: int = attrs.field(default=1, validator=integer(min=1))
    ratio: float = attrs.field(default=0.5, validator=finite(above=0, max=1))
    kind: str = attrs.field(default="a", validator=one_of("a", "b"))
    timeframe: str = attrs.field(default="1m", validator=timeframe(unit=60))
    timeframes: tuple[str, ...] | None = attrs.field(
        default=None, validator=timeframe_list(min_count=1, optional=True)
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": 0}, "'s.count': expected an integer >= 1, got 0"),
        ({"ratio": 0}, "'s.ratio': expected a finite number in (0, 1], got 0.0"),
        ({"ratio": float("nan")}, "'s.ratio': expected a finite number in (0, 1], got nan"),
        ({"kind": "c"}, "'s.kind': expected one of 'a', 'b', got 'c'"),
        (
            {"timeframe": "30s"},
            "'s.timeframe': expected a timeframe of whole minutes such as '1m', '15m', '1h', "
            "got '30s'",
        ),
        (
            {"timeframes": ["5m", "7x"]},
            "'s.timeframes': expected a list of at least 1 timeframes such as '1m', '15m', "
            "'1h', got ['5m', '7x']",
        ),
    ],
)
def test_the_validators_say_what_was_expected(values, message):
    with pytest.raises(ConfigError) as error:
        section_from(Checked, values, "s")
    assert str(error.value) == message


def test_direct_construction_is_checked_with_the_key_named():
    with pytest.raises(SettingError, match=r"^'count': expected an integer >= 1, got 1\.5$"):
        Checked(count=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'kind'"):
        Checked(kind=1)  # type: ignore[arg-type]
    assert Checked(timeframes=None).timeframes is None


def test_a_check_is_attrs_validators_that_refuse_in_one_line():
    check = finite(min=0, max=1)
    assert isinstance(check, Check) and check.expected == "a finite number in [0, 1]"
    assert isinstance(check.rule, type(attrs.validators.and_()))
    field = attrs.fields(Checked).ratio
    for refused in (float("inf"), float("nan"), True, -0.1, 1.5, "0.5"):
        with pytest.raises(SettingError, match=r"^'ratio': expected a finite number in \[0, 1\]"):
            check(None, field, refused)
    for accepted in (0, 1, 0.5):
        check(None, field, accepted)
    with pytest.raises(TypeError):
        finite(min=0, above=0)
    with pytest.raises(TypeError):
        one_of()


def test_one_of_refuses_a_bool_for_an_integer_option():
    field = attrs.fields(Checked).kind
    with pytest.raises(SettingError):
        one_of(1, 2)(None, field, True)
    one_of(True, False)(None, field, True)


# -- the [host] section ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('model = "xgboost"', "'host.model': expected one of 'sgd', 'cheap', got 'xgboost'"),
        ("min_candles = 100", "'host.min_candles': expected an integer in [481, 100000]"),
        ("min_candles = 480", "'host.min_candles': expected an integer in [481, 100000]"),
        ('base_timeframe = "7x"', "'host.base_timeframe': expected a timeframe"),
        ('base_timeframe = "30s"', "'host.base_timeframe': expected a timeframe of whole min"),
        ('confirm_timeframes = ["5m", "7x"]', "'host.confirm_timeframes': expected a list of"),
        ('confirm_timeframes = ["5m"]', "'host.confirm_timeframes': expected a list of at le"),
        ("scan_interval_s = nan", "'host.scan_interval_s': expected a finite number in (0, "),
        ("scan_interval_s = 0", "'host.scan_interval_s': expected a finite number in (0, "),
        ("cycles = -3", "'host.cycles': expected an integer in [1, 100000], got -3"),
        ("universe = -5", "'host.universe': expected an integer in [1, 10000], got -5"),
        ("symbols = -5", "'host.symbols': expected an integer in [1, 10000], got -5"),
        ("universe = 300", "'host.universe': expected at most 'symbols' (260) per scan, got 300"),
        ("candles = 0", "'host.candles': expected an integer in [481, 100000], got 0"),
        ("candles = 520\nmin_candles = 560", "'host.candles': expected at least 'min_candles'"),
        ("latency_ms = inf", "'host.latency_ms': expected a finite number in [0, 10000], got inf"),
        ("max_positions = -1", "'host.max_positions': expected an integer in [0, 10000], got -1"),
        ("buy_threshold = nan", "'host.buy_threshold': expected a finite number in [0, 1], got"),
        ("buy_threshold = 1.5", "'host.buy_threshold': expected a finite number in [0, 1], got"),
        ("buy_threshold = 0.3", "'host.buy_threshold': expected a number above 'sell_threshold'"),
        ("jitter = 2", "'host.jitter': expected a finite number in [0, 1], got 2.0"),
        ("seed = -1", "'host.seed': expected an integer in [0, 4294967295], got -1"),
        ("wrkers = 4", "'host.wrkers': unknown key; did you mean 'workers'?"),
        ('size = "tiny"', "'host.size': expected one of ['full', 'small'], got 'tiny'"),
    ],
)
def test_host_settings_out_of_range_are_one_line(tmp_path, toml, message):
    config = load_config(write(tmp_path / "sltrader.toml", f"[host]\n{toml}\n"))
    with pytest.raises(ConfigError) as error:
        workload_from("full", config.host)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_host_settings_are_checked_with_the_preset():
    # The small preset lists 40 symbols: a universe of 50 is more than it has.
    assert workload_from("full", {"universe": 50}).universe == 50
    with pytest.raises(ConfigError, match=r"'host\.universe': expected at most 'symbols' \(40\)"):
        workload_from("small", {"universe": 50})
    assert workload_from("small", {"size": "small"}).size == "small"
    # the command line's --size chose "full": the file's "small" was overridden
    assert workload_from("full", {"size": "small"}).size == "full"


def test_command_line_overrides_are_checked_and_named_as_options():
    with pytest.raises(ConfigError, match=r"^--workers: expected an integer in \[1, 256\]"):
        workload_from("small", {}, workers=0)
    with pytest.raises(ConfigError, match=r"^--seed: expected an integer in \[0, 4294967295\]"):
        workload_from("small", {}, seed=2**40)
    assert workload_from("small", {"workers": 3}, workers=None).workers == 3


def test_the_host_bounds_are_the_traders_own():
    """MIN_CANDLES, TREND_CANDLES and CONFIRM_NEEDED restate the host's constraints."""
    pytest.importorskip("numpy")
    from sltrader_plugins.host.features import FeatureEngine
    from sltrader_plugins.host.trading import TradingConfig

    FeatureEngine(min_candles=MIN_CANDLES)
    with pytest.raises(ValueError):
        FeatureEngine(min_candles=MIN_CANDLES - 1)
    assert TradingConfig().trend_candles == TREND_CANDLES
    assert TradingConfig().confirm_needed == CONFIRM_NEEDED
    field = attrs.fields(Workload).min_candles
    field.validator(None, field, MIN_CANDLES)
    with pytest.raises(SettingError):
        field.validator(None, field, MIN_CANDLES - 1)


# -- settings from the environment ---------------------------------------------------


def test_every_key_can_come_from_the_environment_over_the_file(tmp_path):
    (tmp_path / "sltrader.toml").write_text(
        'hook_timeout_s = 3.0\n[plugins.shared]\nurl = "redis://file:6379/0"\nwait_ms = 50\n'
        "[host]\nworkers = 8\n"
    )
    environ = {
        "SLTRADER__PLUGINS__SHARED__URL": "redis://cache:6379/0",  # a string, unquoted
        "SLTRADER__HOST__WORKERS": "4",  # a TOML value: an integer
        "SLTRADER__ENABLE": '["batching", "shared"]',
        "SLTRADER__STRICT": "true",
        "SLTRADER_PLUGINS": "warming",  # the enable list's own variable: not a key
        "SLTRADER_EXPECT_PLUGINS": "x",  # one underscore: not ours
    }
    config = load_config(cwd=tmp_path, environ=environ)
    assert config.plugins["shared"] == {"url": "redis://cache:6379/0", "wait_ms": 50}
    assert config.host["workers"] == 4 and config.hook_timeout_s == 3.0
    assert config.enable == ("batching", "shared") and config.strict is True
    assert load_config(cwd=tmp_path, environ={}).plugins["shared"]["url"] == "redis://file:6379/0"


def test_settings_from_the_environment_alone():
    config = load_config(cwd=Path("/nonexistent"), environ={"SLTRADER__HOOK_TIMEOUT_S": "2.5"})
    assert config.hook_timeout_s == 2.5


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SLTRADER__HOOK_TIMEOUT_S": "nan"}, r"SLTRADER__HOOK_TIMEOUT_S: 'hook_timeout_s'"),
        ({"SLTRADER__HOOK_TIMEOUT_S": "-1"}, r"'hook_timeout_s'"),
        ({"SLTRADER__STRICT": "yes"}, r"SLTRADER__STRICT: 'strict': expected true or false"),
        ({"SLTRADER__NOSUCH": "1"}, r"'nosuch'"),
        ({"SLTRADER__PLUGINS__SHARED": "1"}, r"'plugins.shared': expected a table"),
        ({"SLTRADER__PLUGINS____URL": "x"}, r"SLTRADER__PLUGINS____URL: expected SLTRADER__<KEY>"),
        (
            {"SLTRADER__HOST": "1", "SLTRADER__HOST__WORKERS": "2"},
            r"'host' is set as a value and as a table",
        ),
    ],
)
def test_a_wrong_setting_from_the_environment_names_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(cwd=Path("/nonexistent"), environ=environ)


def test_plugins_load_reads_the_environment_it_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plugins = Plugins.load(environ={"SLTRADER__HOOK_TIMEOUT_S": "1.5", "SLTRADER_PLUGINS": ""})
    assert plugins.config.hook_timeout_s == 1.5 and plugins.active() == []


@pytest.mark.parametrize(
    "text, value",
    [("1\nstrict = true", "1\nstrict = true"), ("8 # eight", 8), ("a = 1", "a = 1"), ("", "")],
)
def test_an_environment_value_is_one_value_never_a_document(text, value):
    assert settings_from_environment({"SLTRADER__HOST__X": text}) == {"host": {"x": value}}
