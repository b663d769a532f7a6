"""Every field of every configuration class, fed wrong values: one table, derived.

For each attrs configuration class (the host's ``[host]`` ``Workload`` and each plugin's
section) and each of its fields, the bad values are derived from the field's type and its
:class:`sltrader_plugins.Check`: a wrong type, NaN, both infinities, -1 (unless the range
allows it) and a value just past each bound of the range. Each goes through
``section_from`` alone and must be a ``ConfigError`` of one line naming
``'<section>.<field>'``, the value and what was expected. A new field is in the table
without a new test; a new field without a range check fails ``test_every_field_is_checked``.
"""

from __future__ import annotations

import importlib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from sltrader_plugins import Check, ConfigError, section_from
from sltrader_plugins.host.workload import SIZES, Workload

ROOT = Path(__file__).resolve().parents[1]

#: (module, class name, the section it is parsed from). Plugins may be absent from a
#: tox env: their rows are skipped then, the others still run.
CLASSES = [
    ("sltrader_plugins.host.workload", "Workload", "host"),
    ("sltrader_batching.config", "BatchingConfig", "plugins.batching"),
    ("sltrader_pooling.config", "PoolingConfig", "plugins.pooling"),
    ("sltrader_warming.config", "WarmingConfig", "plugins.warming"),
]


def _load(module: str, name: str) -> type | None:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def config_classes() -> list[Any]:
    params = []
    for module, name, where in CLASSES:
        cls = _load(module, name)
        marks = [] if cls is not None else [pytest.mark.skip(reason=f"{module} not installed")]
        params.append(pytest.param(cls, where, id=name, marks=marks))
    return params


def _base_type(hint: Any) -> tuple[Any, bool]:
    """The field's type without ``| None``, and whether ``None`` is allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _check(field: attrs.Attribute) -> Check | None:
    return field.validator if isinstance(field.validator, Check) else None


def _below(bound: float, integral: bool) -> float:
    return int(bound) - 1 if integral else math.nextafter(bound, -math.inf)


def _above(bound: float, integral: bool) -> float:
    return int(bound) + 1 if integral else math.nextafter(bound, math.inf)


def _valid_timeframe(check: Check) -> str:
    return f"{check.unit}s"  # "60s" is one minute: a multiple of any unit


def wrong_types(base: Any) -> list[Any]:
    if base is bool:
        return ["yes", 1, 0.0]
    if base is int:
        return ["1", 1.5, True, [1]]
    if base is float:
        return ["1.0", True, [1.0]]
    if base is str:
        return [1, True, ["1m"]]
    if typing.get_origin(base) is tuple:
        return ["5m", [1], 5, [True]]
    raise AssertionError(f"no wrong values known for type {base!r}")


def out_of_range(check: Check) -> list[Any]:
    """Values the check itself must refuse, right past what it documents."""
    if check.kind in ("integer", "number"):
        integral = check.kind == "integer"
        values: list[Any] = []
        if check.min is not None:
            values.append(check.min if check.min_open else _below(check.min, integral))
        if check.max is not None:
            values.append(_above(check.max, integral))
        return values
    if check.kind == "choice":
        sample = check.options[0]
        if isinstance(sample, str):
            return ["".join(check.options) + "?", "", sample.upper() + "x"]
        return [max(check.options) + 1, min(check.options) - 1]
    bad = ["7x", "", "0m", "1.5m", "m", "5 m"]
    if check.unit > 1:
        bad.append(f"{check.unit - 1}s")  # not a whole number of units
    if check.kind == "timeframe":
        return bad
    lists = [[tf] for tf in bad] + [[_valid_timeframe(check), "7x"]]
    if check.min_count:
        lists.append([_valid_timeframe(check)] * (check.min_count - 1))
    return lists


def _negative_allowed(check: Check | None) -> bool:
    return (
        check is not None
        and check.kind in ("integer", "number")
        and check.accepts(-1 if check.kind == "integer" else -1.0)
    )


def bad_values(cls: type) -> list[tuple[str, Any]]:
    """``(field, value)`` for every value a field of ``cls`` must refuse."""
    hints = typing.get_type_hints(cls)
    table = []
    for field in attrs.fields(cls):
        base, _ = _base_type(hints[field.name])
        check = _check(field)
        values = [*wrong_types(base), math.nan, math.inf, -math.inf]
        if not _negative_allowed(check):
            values.append(-1)
        if check is not None:
            values.extend(out_of_range(check))
        table.extend((field.name, value) for value in values)
    return table


def table() -> list[Any]:
    params = []
    for module, name, where in CLASSES:
        cls = _load(module, name)
        if cls is None:
            params.append(
                pytest.param(None, where, "", None, id=name, marks=pytest.mark.skip(module))
            )
            continue
        for key, value in bad_values(cls):
            params.append(pytest.param(cls, where, key, value, id=f"{name}.{key}={value!r}"))
    return params


@pytest.mark.parametrize(("cls", "where", "key", "value"), table())
def test_every_wrong_value_is_one_line_naming_the_key(
    cls: type, where: str, key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as error:
        section_from(cls, {key: value}, where)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"'{where}.{key}': expected "), message
    assert "Attribute(" not in message
    assert message.endswith(f", got {_as_given(cls, key, value)!r}"), message


def _as_given(cls: type, key: str, value: Any) -> Any:
    """``value`` as a message shows it: an integer given for a float is a float."""
    base, _ = _base_type(typing.get_type_hints(cls)[key])
    if base is float and type(value) is int:
        return float(value)
    return value


@pytest.mark.parametrize(("cls", "where"), config_classes())
def test_defaults_are_valid(cls: type, where: str) -> None:
    assert section_from(cls, {}, where) == cls()
    defaults = {f.name: getattr(cls(), f.name) for f in attrs.fields(cls)}
    assert section_from(cls, defaults, where) == cls()


@pytest.mark.parametrize(("cls", "where"), config_classes())
def test_every_field_is_checked(cls: type, where: str) -> None:
    """A field with a value range must say it with a Check: then it is in the table."""
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        base, optional = _base_type(hints[field.name])
        check = _check(field)
        if base is bool:
            assert field.validator is None, f"{field.name}: a bool needs no check"
            continue
        assert check is not None, f"{cls.__name__}.{field.name} has no Check validator"
        assert check.optional == optional, f"{field.name}: optional must match the type"
        if base in (int, float):
            assert check.kind == ("integer" if base is int else "number") or (
                check.kind == "choice" and all(type(o) is base for o in check.options)
            ), field.name
        elif base is str:
            assert check.kind in ("choice", "timeframe"), field.name
        else:
            assert check.kind == "timeframe_list", field.name


@pytest.mark.parametrize(("cls", "where"), config_classes())
def test_the_bounds_themselves_are_accepted(cls: type, where: str) -> None:
    """The range is exactly what is documented: each bound passes the field's check."""
    for field in attrs.fields(cls):
        check = _check(field)
        if check is None:
            continue
        if check.kind in ("integer", "number"):
            integral = check.kind == "integer"
            if check.min is not None:
                low = _above(check.min, integral) if check.min_open else check.min
                check(None, field, int(low) if integral else float(low))
            if check.max is not None:
                check(None, field, int(check.max) if integral else float(check.max))
        elif check.kind == "choice":
            for option in check.options:
                check(None, field, option)
        elif check.kind == "timeframe":
            check(None, field, _valid_timeframe(check))
        else:
            check(None, field, (_valid_timeframe(check),) * max(1, check.min_count))
        if check.optional:
            check(None, field, None)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_the_host_presets_are_valid(size: str) -> None:
    preset = SIZES[size]
    assert section_from(Workload, attrs.asdict(preset), "host") == preset


def test_the_table_has_the_documented_bounds_of_the_warming_weights() -> None:
    """docs/warming.md documents the weights' range (1-15); the table feeds 0 and 16."""
    warming = pytest.importorskip("sltrader_warming.config")
    doc = (ROOT / "docs" / "warming.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| `scan_weight`"))
    low, high = map(int, re.search(r"\((\d+)\D(\d+)\)", row).groups())  # type: ignore[union-attr]
    rows = bad_values(warming.WarmingConfig)
    for key in ("scan_weight", "signal_weight"):
        check = attrs.fields_dict(warming.WarmingConfig)[key].validator
        assert (check.min, check.max) == (low, high)
        assert (key, high + 1) in rows and (key, low - 1) in rows
