"""The reference workload: what ``sltrader run`` trades and ``sltrader bench`` replays.

Two sizes of one workload: ``small`` for tests (seconds, no latency) and ``full``, the
headline (hundreds of symbols, real latency, 8 workers). Both are deterministic by seed
and cannot look ahead (the replay exchange never serves an unclosed candle). The
``[host]`` configuration section overrides any field; ``docs/workload.md`` has the
measured numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from sltrader_plugins.config import ConfigError, section_from

_COINS = (
    "BTC",
    "ETH",
    "BNB",
    "SOL",
    "XRP",
    "ADA",
    "DOGE",
    "TRX",
    "AVAX",
    "DOT",
    "LINK",
    "MATIC",
    "TON",
    "SHIB",
    "LTC",
    "BCH",
    "UNI",
    "ATOM",
    "XLM",
    "ETC",
    "FIL",
    "APT",
    "ARB",
    "OP",
    "NEAR",
    "VET",
    "ICP",
    "INJ",
    "SUI",
    "SEI",
    "TIA",
    "RNDR",
    "GRT",
    "AAVE",
    "MKR",
    "SNX",
    "CRV",
    "LDO",
    "IMX",
    "FTM",
)


def _positive(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name!r}: must be positive, got {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name!r}: must not be negative, got {value!r}")


@attrs.frozen
class Workload:
    """Every knob of the reference trader (the ``[host]`` section).

    :ivar symbols: symbols the exchange lists (the universe is drawn from them).
    :ivar universe: symbols scanned per cycle, the top by volume.
    :ivar scan_interval_s: simulated seconds between scans (shorter than a candle).
    :ivar candles: base-timeframe candles per series (the features need ``min_candles``).
    :ivar cache_capacity: series the cache holds (below the key space on purpose).
    :ivar latency_ms: mean real latency per exchange request, jittered by ``jitter``.
    """

    size: str = "full"
    seed: int = 7
    symbols: int = 260
    universe: int = 240
    cycles: int = 160
    scan_interval_s: float = attrs.field(default=7.5, validator=_positive)
    base_timeframe: str = "1m"
    confirm_timeframes: tuple[str, ...] = ("5m", "15m", "1h")
    candles: int = 600
    confirm_candles: int = 60
    min_candles: int = 500
    cache_capacity: int = attrs.field(default=360, validator=_positive)
    latency_ms: float = attrs.field(default=4.0, validator=_non_negative)
    jitter: float = 0.5
    rate_limit_per_min: int = 3000
    workers: int = attrs.field(default=8, validator=_positive)
    model: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "cheap")))
    buy_threshold: float = 0.62
    sell_threshold: float = 0.38
    hold_candles: int = 5
    max_positions: int = 20
    volume_churn: float = 0.08

    def symbol_names(self) -> list[str]:
        """The listed symbols: real-looking names with ``_``, ``/`` and ``-``."""
        names = []
        for i in range(self.symbols):
            coin = _COINS[i] if i < len(_COINS) else f"TK{i:03d}"
            style = i % 3
            if i == 5:
                names.append("1000PEPE-USD")
            elif style == 0:
                names.append(f"{coin}_USDT")
            elif style == 1:
                names.append(f"{coin}/USDT")
            else:
                names.append(f"{coin}-USD")
        return names

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


SIZES: dict[str, Workload] = {
    "full": Workload(),
    "small": Workload(
        size="small",
        symbols=40,
        universe=30,
        cycles=40,
        cache_capacity=60,
        latency_ms=0.0,
        workers=4,
        rate_limit_per_min=0,
        hold_candles=2,
        max_positions=10,
    ),
}


def workload_from(
    size: str, host_section: Mapping[str, Any] | None = None, **overrides: Any
) -> Workload:
    """The ``size`` preset, then the ``[host]`` section, then explicit overrides.

    :raises ConfigError: an unknown size, or a bad key or value in the section.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown workload size {size!r}: expected one of {sorted(SIZES)}")
    section = dict(host_section or {})
    section.pop("size", None)
    parsed = section_from(Workload, section, "host")  # checks names, types and values
    values = {key: getattr(parsed, key) for key in section}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return attrs.evolve(SIZES[size], **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'host': {exc}") from None
