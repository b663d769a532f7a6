"""The configuration file: ``sltrader.toml``, or ``[tool.sltrader]`` in ``pyproject.toml``.

Layout::

    enable = ["batching", "warming"]   # which installed plugins load (default: all)
    strict = false                     # a plugin that fails to load stops start-up

    [host]                             # the reference host's settings
    workers = 8

    [plugins.batching]                 # one section per plugin, passed to it at start-up
    enabled = true
    max_batch_size = 16

A section is parsed into an attrs class by :func:`section_from`. Its fields are validated
the one way every configuration class here uses: a :class:`Check` from :func:`integer`,
:func:`finite`, :func:`one_of`, :func:`timeframe` or :func:`timeframe_list` as the field's
validator, and :class:`SettingError` for a check between fields
(``__attrs_post_init__``). Every refusal is one line naming ``<section>.<key>``, the
value and what was expected.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
from attrs import validators

from sltrader_plugins.timeframes import timeframe_seconds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE = "sltrader.toml"
PYPROJECT_FILE = "pyproject.toml"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value has the wrong type or value; the message names the key."""


class SettingError(ValueError):
    """One setting refused: its ``key``, what was ``expected`` and the ``value`` given.

    What a :class:`Check` raises, and what a configuration class raises from
    ``__attrs_post_init__`` for a check between fields. The message is one line,
    ``'key': expected <expected>, got <value>``; :func:`section_from` turns it into a
    :class:`ConfigError` naming ``'<section>.<key>'``.
    """

    def __init__(self, key: str, expected: str, value: Any) -> None:
        super().__init__(f"'{key}': {self.reason(expected, value)}")
        self.key = key
        self.expected = expected
        self.value = value

    @staticmethod
    def reason(expected: str, value: Any) -> str:
        """``expected <expected>, got <value>``, a tuple shown as the TOML list it was."""
        shown = list(value) if isinstance(value, tuple) else value
        return f"expected {expected}, got {shown!r}"


# -- validators: the one way to write a validated field ---------------------------------


@attrs.frozen
class Check:
    """An attrs validator of one setting, made by :func:`integer`, :func:`finite`,
    :func:`one_of`, :func:`timeframe` or :func:`timeframe_list`::

        max_batch_size: int = attrs.field(default=32, validator=integer(min=1))

    ``rule``, composed of attrs' own validators (``instance_of``, ``ge``, ``in_``, ...),
    decides; whatever it refuses, a wrong type as well as a wrong value (direct
    construction is checked too), becomes one :class:`SettingError` saying ``expected``.

    :ivar expected: what is accepted, as the error message says it.
    :ivar rule: the attrs validator that decides.
    :ivar optional: ``None`` is accepted (the field's type is ``X | None``).
    """

    expected: str
    rule: Callable[[Any, attrs.Attribute, Any], Any]
    optional: bool = False

    def __call__(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None and self.optional:
            return
        try:
            self.rule(instance, attribute, value)
        except (TypeError, ValueError):
            raise SettingError(attribute.name, self.expected, value) from None


def _not_bool(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    # bool is an int to isinstance; a TOML `true` is never a count
    if isinstance(value, bool):
        raise TypeError(f"'{attribute.name}' must not be a bool")


def _finite(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be finite")


def _whole_timeframe(unit: int) -> Callable[[Any, attrs.Attribute, Any], None]:
    def check(_: Any, attribute: attrs.Attribute, value: Any) -> None:
        if timeframe_seconds(value) % unit:  # raises ValueError for a bad timeframe too
            raise ValueError(f"'{attribute.name}' must be a whole number of {unit} s")

    return check


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range_text(min: float | None, min_open: bool, max: float | None) -> str:
    if min is not None and max is not None:
        return f" in {'(' if min_open else '['}{_bound(min)}, {_bound(max)}]"
    if min is not None:
        return f" {'>' if min_open else '>='} {_bound(min)}"
    if max is not None:
        return f" <= {_bound(max)}"
    return ""


def _range_rules(min: float | None, min_open: bool, max: float | None) -> list[Any]:
    low = [] if min is None else [(validators.gt if min_open else validators.ge)(min)]
    return low + ([] if max is None else [validators.le(max)])


def _why(why: str) -> str:
    return f" ({why})" if why else ""


def integer(
    min: int | None = None, max: int | None = None, *, why: str = "", optional: bool = False
) -> Check:
    """An integer (not a bool) in ``[min, max]``, e.g. ``integer(min=1)``.

    :param why: a reason for the bound, added to the message.
    :param optional: ``None`` is accepted too.
    """
    expected = f"an integer{_range_text(min, False, max)}{_why(why)}"
    rule = validators.and_(
        _not_bool, validators.instance_of(numbers.Integral), *_range_rules(min, False, max)
    )
    return Check(expected, rule, optional)


def finite(
    min: float | None = None,
    max: float | None = None,
    *,
    above: float | None = None,
    why: str = "",
    optional: bool = False,
) -> Check:
    """A finite number (an integer is one; NaN and infinities never are) in ``[min, max]``,
    or above ``above`` (the bound itself excluded), e.g. ``finite(above=0, max=1)``."""
    if above is not None and min is not None:
        raise TypeError("give min or above, not both")
    low, low_open = (above, True) if above is not None else (min, False)
    expected = f"a finite number{_range_text(low, low_open, max)}{_why(why)}"
    rule = validators.and_(
        _not_bool, validators.instance_of(numbers.Real), _finite, *_range_rules(low, low_open, max)
    )
    return Check(expected, rule, optional)


def one_of(*options: Any, optional: bool = False) -> Check:
    """One of ``options`` (of the same type), e.g. ``one_of("sgd", "cheap")``."""
    if not options:
        raise TypeError("one_of needs at least one option")
    expected = "one of " + ", ".join(repr(o) for o in options)
    same_type = validators.instance_of(tuple({type(o) for o in options}))
    rules = [same_type, validators.in_(options)]
    if not any(isinstance(o, bool) for o in options):
        rules.insert(0, _not_bool)
    return Check(expected, validators.and_(*rules), optional)


def _timeframe_text(unit: int, plural: bool = False) -> str:
    whole = {1: "", 60: " of whole minutes", 3600: " of whole hours"}.get(unit, f" of {unit} s")
    return f"timeframe{'s' if plural else ''}{whole} such as '1m', '15m', '1h'"


def timeframe(*, unit: int = 1, optional: bool = False) -> Check:
    """A timeframe such as ``"5m"`` (see :func:`timeframe_seconds`) whose length is a whole
    number of ``unit`` seconds (``unit=60``: no ``"30s"``)."""
    rule = validators.and_(validators.instance_of(str), _whole_timeframe(unit))
    return Check(f"a {_timeframe_text(unit)}", rule, optional)


def timeframe_list(*, unit: int = 1, min_count: int = 0, optional: bool = False) -> Check:
    """A list of at least ``min_count`` timeframes, each as :func:`timeframe` accepts."""
    least = f"at least {min_count} " if min_count else ""
    expected = f"a list of {least}{_timeframe_text(unit, plural=True)}"
    each = validators.and_(validators.instance_of(str), _whole_timeframe(unit))
    rule = validators.and_(
        validators.instance_of(tuple), validators.min_len(min_count), validators.deep_iterable(each)
    )
    return Check(expected, rule, optional)


# -- the file ---------------------------------------------------------------------------


def _check_enable(_: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        shown = list(value) if isinstance(value, tuple) else value  # as the file wrote it
        raise ConfigError(f"'enable': expected a list of plugin names, got {shown!r}")


def _to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _unknown_key(key: str, where: str, known: Iterable[str]) -> ConfigError:
    """The error for an unknown ``key`` of section ``where`` (``""``: the file's top
    level), suggesting the nearest known name."""
    known = sorted(known)
    name = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return ConfigError(f"'{name}': unknown key; did you mean '{close[0]}'?")
    listed = ", ".join(repr(k) for k in known) or "none"
    return ConfigError(f"'{name}': unknown key; expected one of {listed}")


#: How long the main loop waits for one plugin's main-loop hook call (seconds).
DEFAULT_HOOK_TIMEOUT_S = 10.0
HOOK_TIMEOUT = finite(above=0.0, max=3600.0)


@attrs.frozen
class Config:
    """The whole configuration, validated.

    :ivar enable: the enable list of the file (``None``: every installed plugin).
    :ivar strict: a plugin that fails to import or to validate is an error, not a warning.
    :ivar hook_timeout_s: how long the main loop waits for one plugin's main-loop hook
        call before it abandons it (docs/reliability.md).
    :ivar host: the ``[host]`` section, parsed by the host.
    :ivar plugins: the ``[plugins.<name>]`` sections by entry-point name.
    :ivar source: the file this came from, ``None`` for the defaults.
    """

    enable: tuple[str, ...] | None = attrs.field(
        default=None, converter=_to_tuple, validator=_check_enable
    )
    strict: bool = False
    hook_timeout_s: float = attrs.field(default=DEFAULT_HOOK_TIMEOUT_S, validator=HOOK_TIMEOUT)
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
        known = ("enable", "strict", "hook_timeout_s", "host", "plugins")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise _unknown_key(unknown[0], "", known)
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
        try:  # the fields' own validators check the rest, in one line each
            return cls(
                enable=data.get("enable"),
                strict=strict,
                hook_timeout_s=data.get("hook_timeout_s", DEFAULT_HOOK_TIMEOUT_S),
                host=dict(host),
                plugins={name: dict(section) for name, section in plugins.items()},
                source=source,
            )
        except SettingError as exc:
            raise ConfigError(str(exc)) from None


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


#: An environment variable ``SLTRADER__<KEY>``, or ``SLTRADER__<SECTION>__<KEY>`` at any
#: depth, sets that key of the configuration (``SLTRADER__PLUGINS__SHARED__URL``:
#: ``[plugins.shared] url``) over the file's.
ENV_PREFIX = "SLTRADER__"


def settings_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration keys set by ``SLTRADER__...`` variables, as a nested mapping.

    Names are lower-cased and split at each ``__``. A value is read as a TOML value
    (``8``, ``2.5``, ``true``, ``["batching", "warming"]``, ``"quoted"``), and as a plain
    string where it is none (``redis://cache:6379/0``).

    :raises ConfigError: a name with an empty part, or a key set both as a value and as a
        table.
    """
    settings: dict[str, Any] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            raise ConfigError(f"{name}: expected SLTRADER__<KEY> or SLTRADER__<SECTION>__<KEY>")
        table = settings
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name}: '{part}' is set as a value and as a table")
        if isinstance(table.get(path[-1]), dict):
            raise ConfigError(f"{name}: '{path[-1]}' is set as a value and as a table")
        table[path[-1]] = _environment_value(environ[name])
    return settings


def _environment_value(text: str) -> Any:
    if "\n" in text or "\r" in text:
        return text  # one value, never a document of several keys
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["value"] if list(parsed) == ["value"] else text


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys in it, tables merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, Mapping):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the configuration: the file, then the environment's ``SLTRADER__`` variables
    over it (:func:`settings_from_environment`), validated together.

    With ``path``, that file (``sltrader.toml`` layout, or a ``pyproject.toml``). Without,
    ``sltrader.toml`` in ``cwd``, else ``[tool.sltrader]`` of ``cwd/pyproject.toml``, else
    the defaults.

    :param environ: the environment (default ``os.environ``).
    :raises ConfigError: the file cannot be read, is not UTF-8 TOML, or a value is invalid.
    """
    overrides = settings_from_environment(os.environ if environ is None else environ)
    document, path = _read_file(path, cwd)
    try:
        return Config.from_mapping(_merged(document, overrides), source=path)
    except ConfigError as exc:
        where = ", ".join([*([str(path)] if path else []), *_names(overrides)])
        raise ConfigError(f"{where}: {exc}") from None


def _names(overrides: Mapping[str, Any], prefix: str = ENV_PREFIX) -> list[str]:
    names = []
    for key, value in overrides.items():
        name = f"{prefix}{key.upper()}"
        names.extend(_names(value, name + "__") if isinstance(value, dict) else [name])
    return names


def _read_file(path: Path | None, cwd: Path | None) -> tuple[Mapping[str, Any], Path | None]:
    """The file's settings (empty without a file), and the file."""
    if path is None:
        base = cwd or Path.cwd()
        for candidate in (base / CONFIG_FILE, base / PYPROJECT_FILE):
            if candidate.is_file():
                path = candidate
                break
        else:
            return {}, None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {raw[exc.start]:#04x} on line {line}): "
            "save it as UTF-8"
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {_one_line(str(exc))}") from None
    if path.name != PYPROJECT_FILE:
        return document, path
    try:
        tool = _table(document.get("tool", {}), "tool", "")
        return _table(tool.get("sltrader", {}), "sltrader", "tool"), path
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _table(value: Any, key: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        name = f"{where}.{key}" if where else key
        raise ConfigError(f"'{name}': expected a table, got {value!r}")
    return value


def section_from(cls: type[T], section: Mapping[str, Any], where: str) -> T:
    """Build the attrs class ``cls`` from a configuration section, checking every key.

    Supported field types: ``bool``, ``int``, ``float`` (an integer is accepted), ``str``
    and ``tuple[str, ...]`` (from a TOML array), each possibly ``| None``. Field
    validators and ``__attrs_post_init__`` run too; whatever they raise
    (:class:`SettingError`, or any ``ValueError``/``TypeError``) becomes one line.

    :param where: the section's name in messages, e.g. ``"plugins.batching"``.
    :raises ConfigError: for an unknown key (suggesting the nearest name), a missing
        required key, a wrong type or a value a validator refuses: one line naming
        ``'<where>.<key>'``, what was expected and what was given.
    """
    fields = {n: f for n, f in attrs.fields_dict(cls).items() if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise _unknown_key(unknown[0], where, fields)
    for name, field in fields.items():
        if field.default is attrs.NOTHING and name not in section:
            raise ConfigError(f"'{where}.{name}': missing (it has no default)")
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in section.items()}
    for key, value in values.items():  # each field's validator, so its refusal names the key
        validator = fields[key].validator
        try:
            if validator is not None:
                validator(None, fields[key], value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"'{where}.{key}': {_refusal(exc, key)}") from None
    try:
        return cls(**values)
    except SettingError as exc:  # a check between fields, from __attrs_post_init__
        raise ConfigError(f"'{where}.{exc.key}': {_refusal(exc, exc.key)}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'{where}': {_refusal(exc, '')}") from None


def _refusal(exc: BaseException, key: str) -> str:
    """Why ``exc`` refused setting ``key``, in one line: a :class:`SettingError`'s reason,
    or another validator's message (an ``attrs.validators`` one, say) less the leading
    ``'key'`` it names the key with."""
    if isinstance(exc, SettingError):
        return exc.reason(exc.expected, exc.value)
    message = _one_line(str(exc.args[0]) if exc.args else type(exc).__name__)
    return message.removeprefix(f"'{key}'").lstrip(" :") if key else message


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


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
