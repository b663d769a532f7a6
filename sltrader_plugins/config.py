"""The configuration file: ``sltrader.toml``, or ``[tool.sltrader]`` in ``pyproject.toml``.

Layout::

    enable = ["batching", "warming"]   # which installed plugins load (default: all)
    strict = false                     # a plugin that fails to load stops start-up

    [host]                             # the reference host's settings
    workers = 8

    [plugins.batching]                 # one section per plugin, passed to it at start-up
    enabled = true
    max_batch_size = 16
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "sltrader.toml"
PYPROJECT_FILE = "pyproject.toml"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value has the wrong type or value; the message names the key."""


def _check_enable(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"'enable': expected a list of plugin names, got {value!r}")


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class Config:
    """The whole configuration, validated.

    :ivar enable: the enable list of the file (``None``: every installed plugin).
    :ivar strict: a plugin that fails to import or to validate is an error, not a warning.
    :ivar host: the ``[host]`` section, parsed by the host.
    :ivar plugins: the ``[plugins.<name>]`` sections by entry-point name.
    :ivar source: the file this came from, ``None`` for the defaults.
    """

    enable: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_check_enable
    )
    strict: bool = False
    host: Mapping[str, Any] = attrs.field(factory=dict)
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    source: Path | None = None

    def plugin(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` section (empty when the file has none)."""
        return self.plugins.get(name, {})

    def plugin_enabled(self, name: str) -> bool:
        """``False`` when the plugin's section says ``enabled = false``."""
        return bool(self.plugin(name).get("enabled", True))

    def settings(self, name: str) -> PluginSettings:
        """What plugin ``name`` is given: its section, less ``enabled`` (the manager's)."""
        section = {k: v for k, v in self.plugin(name).items() if k != "enabled"}
        return PluginSettings(name, section)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: Path | None = None) -> Config:
        """Validate a parsed TOML document.

        :raises ConfigError: naming the first key whose type or value is wrong.
        """
        known = {"enable", "strict", "host", "plugins"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown}: expected some of {sorted(known)}")
        strict = data.get("strict", False)
        if not isinstance(strict, bool):
            raise ConfigError(f"'strict': expected true or false, got {strict!r}")
        host = data.get("host", {})
        if not isinstance(host, Mapping):
            raise ConfigError(f"'host': expected a table, got {host!r}")
        plugins = data.get("plugins", {})
        if not isinstance(plugins, Mapping):
            raise ConfigError(f"'plugins': expected a table of plugin sections, got {plugins!r}")
        for name, section in plugins.items():
            if not isinstance(section, Mapping):
                raise ConfigError(f"'plugins.{name}': expected a table, got {section!r}")
            enabled = section.get("enabled", True)
            if not isinstance(enabled, bool):
                raise ConfigError(
                    f"'plugins.{name}.enabled': expected true or false, got {enabled!r}"
                )
        return cls(
            enable=data.get("enable"),
            strict=strict,
            host=dict(host),
            plugins={name: dict(section) for name, section in plugins.items()},
            source=source,
        )


@attrs.frozen
class PluginSettings:
    """One plugin's own part of the configuration, handed to it by ``on_start``.

    :ivar name: the entry-point name the plugin was loaded under: its section is
        ``[plugins.<name>]`` and its metrics are reported as ``<name>.<metric>``.
    :ivar section: that section's keys, less ``enabled`` (which the manager applies
        before the plugin loads).
    """

    name: str
    section: Mapping[str, Any] = attrs.field(factory=dict)

    def parse(self, cls: type[T]) -> T:
        """The section as the attrs class ``cls`` (see :func:`section_from`).

        :raises ConfigError: naming ``plugins.<name>.<key>`` and what was expected.
        """
        return section_from(cls, self.section, f"plugins.{self.name}")


def load_config(path: Path | None = None, cwd: Path | None = None) -> Config:
    """Read the configuration.

    With ``path``, that file (``sltrader.toml`` layout, or a ``pyproject.toml``). Without,
    ``sltrader.toml`` in ``cwd``, else ``[tool.sltrader]`` of ``cwd/pyproject.toml``, else
    the defaults.

    :raises ConfigError: the file cannot be read, is not TOML, or a value is invalid.
    """
    if path is None:
        base = cwd or Path.cwd()
        for candidate in (base / CONFIG_FILE, base / PYPROJECT_FILE):
            if candidate.is_file():
                path = candidate
                break
        else:
            return Config()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    if path.name == PYPROJECT_FILE:
        document = document.get("tool", {}).get("sltrader", {})
    try:
        return Config.from_mapping(document, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def section_from(cls: type[T], section: Mapping[str, Any], where: str) -> T:
    """Build the attrs class ``cls`` from a configuration section, checking every key.

    Supported field types: ``bool``, ``int``, ``float`` (an integer is accepted), ``str``
    and ``tuple[str, ...]`` (from a TOML array). Field validators run too.

    :param where: the section's name in messages, e.g. ``"plugins.batching"``.
    :raises ConfigError: for an unknown key, a wrong type or a value a validator refuses,
        naming ``where.key`` and what was expected.
    """
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(f"'{where}': unknown key(s) {unknown}; expected some of {sorted(fields)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        expected = hints[key]
        values[key] = _coerce(value, expected, f"{where}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'{where}': {exc}") from None


def _coerce(value: Any, expected: Any, key: str) -> Any:
    origin = typing.get_origin(expected)
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(expected):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        ok = False
    else:  # pragma: no cover - a plugin author's mistake, not a user's
        raise TypeError(f"unsupported config field type {expected!r} for {key!r}")
    if not ok:
        raise ConfigError(f"'{key}': expected {_describe(expected)}, got {value!r}")
    return value


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) is tuple:
        return "a list of strings"
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(
            _describe(option) for option in typing.get_args(expected) if option is not type(None)
        )
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        expected, str(expected)
    )
