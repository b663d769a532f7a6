"""The configuration file and typed sections."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from sltrader_plugins.config import Config, ConfigError, load_config, section_from


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
        ("enabel = []\n", "unknown key(s) ['enabel']"),
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
        ({"size": 0}, "'plugins.x': 'size' must be positive, got 0"),
        ({"sise": 1}, "'plugins.x': unknown key(s) ['sise']; expected some of"),
    ],
)
def test_section_from_names_the_key_and_what_was_expected(values, message):
    with pytest.raises(ConfigError) as error:
        section_from(Section, values, "plugins.x")
    assert message in str(error.value)
