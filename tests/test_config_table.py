"""Every setting of every configuration class, against bounds stated here, literally.

The table states, for each field, the lowest and the highest value accepted and the value
just outside each end (a number), or the values accepted and refused (anything else). The
values are written out, never read from the classes' own checks: a bound changed in a
class fails a row here. Every refused value must be a ``ConfigError`` of one line naming
``'<section>.<key>'``, what was expected and the value as given.

The classes: the file's top level (``Config``), the reference host's ``[host]``
(``Workload``) and each plugin's section. A plugin's rows are skipped where the plugin is
not installed (tox runs ``tests/`` without plugins too). A field missing from the table
fails ``test_every_field_is_in_the_table``: a new field comes with its bounds.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pytest

from sltrader_plugins import Check, ConfigError, section_from
from sltrader_plugins.config import Config
from sltrader_plugins.host.workload import SIZES, Workload

ROOT = Path(__file__).resolve().parents[1]


class Section(NamedTuple):
    """A configuration class and the section it is parsed from (``""``: the top level)."""

    module: str
    name: str
    where: str

    def load(self) -> type:
        return getattr(pytest.importorskip(self.module), self.name)


CONFIG = Section("sltrader_plugins.config", "Config", "")
HOST = Section("sltrader_plugins.host.workload", "Workload", "host")
BATCHING = Section("sltrader_batching.config", "BatchingConfig", "plugins.batching")
POOLING = Section("sltrader_pooling.config", "PoolingConfig", "plugins.pooling")
WARMING = Section("sltrader_warming.config", "WarmingConfig", "plugins.warming")
SHARED = Section("sltrader_shared.config", "SharedConfig", "plugins.shared")

#: Fields of ``Config`` that are tables, not settings (test_config.py tests them).
NOT_SETTINGS = {CONFIG: {"host", "plugins", "source"}}


class Range(NamedTuple):
    """A number's range: ``lowest`` and ``highest`` are accepted, ``too_low`` and
    ``too_high`` (the values just outside) refused. ``too_high`` ``None``: no upper limit
    (``highest`` is then only a large value)."""

    key: str
    too_low: float
    lowest: float
    highest: float
    too_high: float | None
    optional: bool = False  # None is accepted too (else refused)
    given: Mapping[str, Any] | None = None  # other keys the ends need (a check between keys)


class Values(NamedTuple):
    """A setting that is not a range of numbers: values accepted, values refused."""

    key: str
    accepted: tuple[Any, ...]
    refused: tuple[Any, ...]


def below(x: float) -> float:
    """The float just below ``x``."""
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    """The float just above ``x``."""
    return math.nextafter(x, math.inf)


def flag(key: str) -> Values:
    return Values(key, (True, False), ("true", 1, 0.0, None))


BIG = 2**62  # an integer setting without an upper limit takes this
HUGE = 1e300  # a number setting without an upper limit takes this
NO_SELL, ALL_BUY = {"sell_threshold": 0.0}, {"buy_threshold": 1.0}

# The expected bounds, written out: those docs/warming.md and docs/shared.md state, and
# for the rest the ones the classes had when this table was written (a change is a
# decision: change the row with it). Columns of a Range:
#   key, too low (refused), lowest (accepted), highest (accepted), too high (refused)
TABLE: dict[Section, list[Range | Values]] = {
    CONFIG: [
        Values(
            "enable",
            (None, [], ["batching"], ["batching", "warming"]),
            ("batching", 7, [""], [1], ["batching", ""]),
        ),
        flag("strict"),
        Range("hook_timeout_s", 0.0, above(0.0), 3600.0, above(3600.0)),
    ],
    HOST: [
        Values("size", ("full", "small"), ("medium", "Full", "", None)),
        Range("seed", -1, 0, 4_294_967_295, 4_294_967_296),
        Range("symbols", 0, 1, 10_000, 10_001, given={"universe": 1}),
        Range("universe", 0, 1, 10_000, 10_001, given={"symbols": 10_000}),
        Range("cycles", 0, 1, 100_000, 100_001),
        Range("scan_interval_s", 0.0, above(0.0), 86_400.0, above(86_400.0)),
        Values("base_timeframe", ("1m", "15m", "1h", "1d"), ("30s", "90s", "7x", "", "1.5m")),
        Values(
            "confirm_timeframes",
            (["1m", "5m"], ["5m", "15m", "1h", "4h"]),  # at least 2, whole minutes
            (["5m"], [], ["30s", "1m"], ["5m", "7x"]),
        ),
        Range("candles", 480, 481, 100_000, 100_001, given={"min_candles": 481}),
        Range("confirm_candles", 19, 20, 10_000, 10_001),
        Range("min_candles", 480, 481, 100_000, 100_001, given={"candles": 100_000}),
        Range("cache_capacity", 0, 1, 1_000_000, 1_000_001),
        Values("latency", ("lan", "wan"), ("LAN", "dsl", "")),
        Range("latency_ms", below(0.0), 0.0, 10_000.0, above(10_000.0)),
        Range("jitter", below(0.0), 0.0, 1.0, above(1.0)),
        Range("rate_limit_per_min", -1, 0, 1_000_000, 1_000_001),
        Range("fetch_timeout_s", 0.0, above(0.0), 3600.0, above(3600.0), optional=True),
        Range("workers", 0, 1, 256, 257),
        Values("model", ("sgd", "cheap"), ("SGD", "lgbm", "")),
        # in [0, 1] and above sell_threshold: 0 itself never passes (sell is at least 0)
        Range("buy_threshold", below(0.0), above(0.0), 1.0, above(1.0), given=NO_SELL),
        # in [0, 1] and below buy_threshold: 1 itself never passes (buy is at most 1)
        Range("sell_threshold", below(0.0), 0.0, below(1.0), above(1.0), given=ALL_BUY),
        Range("hold_candles", 0, 1, 10_000, 10_001),
        Range("max_positions", -1, 0, 10_000, 10_001),
        Range("volume_churn", below(0.0), 0.0, 1.0, above(1.0)),
    ],
    BATCHING: [
        Range("max_batch_size", 0, 1, 65_536, 65_537),
        Range("max_wait_ms", below(0.0), 0.0, 3_600_000.0, above(3_600_000.0)),
        Range("timeout_ms", 0.0, above(0.0), 3_600_000.0, above(3_600_000.0)),
        flag("step_aside"),
    ],
    POOLING: [
        Range("max_idle_bytes", -1, 0, BIG, None),
        Range("max_idle_builds", -1, 0, BIG, None, optional=True),
        Range("max_pooled_bytes", 0, 1, BIG, None),
        flag("poison"),
        flag("step_aside"),
    ],
    WARMING: [
        Range("warm_threshold", below(0.0), 0.0, 255.0, above(255.0)),  # a score stops at 255
        Range("cooldown_s", below(0.0), 0.0, HUGE, None),
        Range("top_k", 0, 1, BIG, None),
        Values(
            "higher_timeframes",
            (None, [], ["30s"], ["1m", "1h", "4h"]),
            (["7x"], [""], ["1.5m"], ["1h", "0m"], "1h"),
        ),
        Range("request_budget", -1, 0, BIG, None),
        Range("max_parallel", 0, 1, 256, 257),
        Range("scan_weight", 0, 1, 15, 16),  # docs/warming.md: 1-15
        Range("signal_weight", 0, 1, 15, 16),
        Range("recency_candles", below(0.0), 0.0, HUGE, None),
        Range("max_tracked", 15, 16, 1_048_576, 1_048_577),
        flag("warm_new_symbols"),
        flag("probe_higher_timeframes"),
        flag("follow_confirmations"),
        flag("step_aside"),
    ],
    SHARED: [
        Values(
            "url",
            (None, "redis://127.0.0.1:6379/0", "rediss://cache.internal:6380", "unix:///r.sock"),
            ("http://127.0.0.1:6379", "redis://", "redis://host:port/0", "redis://h/db", "unix://"),
        ),
        Values(
            "namespace",  # docs/shared.md: 1-64 of A-Z a-z 0-9 . _ - :
            ("a", "x" * 64, "sltrader.eu-1:spot_v2"),
            ("", "x" * 65, "a b", "ns/1", None),
        ),
        Range("lease_ms", 99, 100, 600_000, 600_001),
        Range("wait_ms", -1, 0, 600_000, 600_001),
        Range("timeout_ms", 9, 10, 60_000, 60_001),
        Range("requests_per_minute", below(0.0), 0.0, 1e7, above(1e7)),
        Range("burst", 0, 1, 1_000_000, 1_000_001),
        Range("retry_s", 0.0, above(0.0), 3600.0, above(3600.0)),
        Range("max_pace_wait_ms", -1, 0, 600_000, 600_001),
        flag("share_alone"),
    ],
}


def parse(section: Section, values: Mapping[str, Any]) -> Any:
    cls = section.load()
    if cls is Config:
        return Config.from_mapping(values)
    return section_from(cls, values, section.where)


def _name(section: Section, key: str) -> str:
    return f"{section.where}.{key}" if section.where else key


def _wrong_types(row: Range) -> tuple[Any, ...]:
    """Values of another type than the row's numbers (and NaN, infinities)."""
    if type(row.lowest) is int:
        return ("1", 1.5, True, [1], math.nan, math.inf)
    return ("1.0", True, [1.0], math.nan, math.inf, -math.inf)


def _accepted(row: Range | Values) -> Iterator[Any]:
    if isinstance(row, Values):
        yield from row.accepted
        return
    yield row.lowest
    yield row.highest
    if row.optional:
        yield None


def _refused(row: Range | Values) -> Iterator[Any]:
    if isinstance(row, Values):
        yield from row.refused
        return
    yield row.too_low
    if row.too_high is not None:
        yield row.too_high
    if not row.optional:
        yield None
    yield from _wrong_types(row)


def _cases(values: Callable[[Range | Values], Iterator[Any]]) -> list[Any]:
    params = []
    for section, rows in TABLE.items():
        for row in rows:
            given = row.given if isinstance(row, Range) else None
            for value in values(row):
                params.append(
                    pytest.param(
                        section,
                        row.key,
                        value,
                        dict(given or {}),
                        id=f"{section.name}.{row.key}={value!r}",
                    )
                )
    return params


@pytest.mark.parametrize(("section", "key", "value", "given"), _cases(_accepted))
def test_each_end_of_a_range_and_each_valid_value_is_accepted(
    section: Section, key: str, value: Any, given: dict[str, Any]
) -> None:
    parsed = parse(section, {**given, key: value})
    assert getattr(parsed, key) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize(("section", "key", "value", "given"), _cases(_refused))
def test_a_value_just_outside_or_of_another_kind_is_one_line_naming_the_key(
    section: Section, key: str, value: Any, given: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as error:
        parse(section, {**given, key: value})
    message = str(error.value)
    assert "\n" not in message and "Attribute(" not in message, message
    assert message.startswith(f"'{_name(section, key)}': expected "), message
    assert message.endswith(f", got {_as_given(section, key, value)!r}"), message


@pytest.mark.parametrize("value", [[""], [1], ["batching", ""]])
def test_a_wrong_enable_list_is_refused(value: list[Any]) -> None:
    with pytest.raises(ConfigError, match=r"^'enable': expected a list of plugin names, got "):
        Config.from_mapping({"enable": value})


def _as_given(section: Section, key: str, value: Any) -> Any:
    """``value`` as a message shows it: an integer given for a float is a float."""
    base, _ = _base_type(typing.get_type_hints(section.load())[key])
    if base is float and type(value) is int:
        return float(value)
    return value


def _base_type(hint: Any) -> tuple[Any, bool]:
    """The field's type without ``| None``, and whether ``None`` is allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


@pytest.mark.parametrize("section", list(TABLE), ids=lambda s: s.name)
def test_every_field_is_in_the_table(section: Section) -> None:
    cls = section.load()
    fields = {f.name for f in attrs.fields(cls) if f.init} - NOT_SETTINGS.get(section, set())
    keys = [row.key for row in TABLE[section]]
    assert len(keys) == len(set(keys)), "a field is in the table twice"
    assert set(keys) == fields, "every field, with its bounds, and no other"


SECTIONS = [section for section in TABLE if section is not CONFIG]
#: Fields whose value is not a number, a choice or a timeframe: a validator of their own.
OWN_VALIDATORS = {(SHARED, "url"), (SHARED, "namespace")}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.name)
def test_defaults_are_valid(section: Section) -> None:
    cls = section.load()
    assert section_from(cls, {}, section.where) == cls()
    defaults = {f.name: getattr(cls(), f.name) for f in attrs.fields(cls)}
    assert section_from(cls, defaults, section.where) == cls()


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.name)
def test_every_range_is_said_with_a_check(section: Section) -> None:
    """A field with a value range says it with a :class:`Check` (docs/plugins.md)."""
    cls = section.load()
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        base, optional = _base_type(hints[field.name])
        if base is bool:
            assert field.validator is None, f"{field.name}: a bool needs no check"
            continue
        if (section, field.name) in OWN_VALIDATORS:
            continue
        check = field.validator
        assert isinstance(check, Check), f"{cls.__name__}.{field.name} has no Check validator"
        assert check.optional == optional, f"{field.name}: optional must match the type"


@pytest.mark.parametrize("size", sorted(SIZES))
def test_the_host_presets_are_valid(size: str) -> None:
    preset = SIZES[size]
    assert section_from(Workload, attrs.asdict(preset), "host") == preset


def test_the_table_has_the_documented_bounds_of_the_warming_weights() -> None:
    """docs/warming.md documents the weights' range (1-15): the table's rows say it too."""
    doc = (ROOT / "docs" / "warming.md").read_text(encoding="utf-8")
    row = next(line for line in doc.splitlines() if line.startswith("| `scan_weight`"))
    low, high = map(int, re.search(r"\((\d+)\D(\d+)\)", row).groups())  # type: ignore[union-attr]
    rows = {row.key: row for row in TABLE[WARMING]}
    for key in ("scan_weight", "signal_weight"):
        assert rows[key][:5] == (key, low - 1, low, high, high + 1)
