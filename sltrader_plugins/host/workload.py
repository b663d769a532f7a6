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

from sltrader_plugins.config import (
    ConfigError,
    SettingError,
    finite,
    integer,
    one_of,
    section_from,
    timeframe,
    timeframe_list,
)
from sltrader_plugins.host.exchange import LATENCY_PROFILES, LatencyProfile, MarketConfig
from sltrader_plugins.timeframes import timeframe_seconds

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


#: The simulated clock's start: a day boundary (2023-11-15 00:00 UTC) plus 5 s, so the
#: first scan is mid-candle (the host's ``START + 5``).
CLOCK_START = 1_700_006_400.0 + 5.0

#: The fewest candles a series needs: ``FeatureEngine`` wants ``min_candles >= 300`` and
#: above its EMA window (480 candles, the host's default).
MIN_CANDLES = 481
#: The fewest candles a confirmation series needs (``TradingConfig.trend_candles``).
TREND_CANDLES = 20
#: The fewest confirmation timeframes with which a signal can be confirmed
#: (``TradingConfig.confirm_needed`` votes).
CONFIRM_NEEDED = 2


@attrs.frozen
class Workload:
    """Every knob of the reference trader (the ``[host]`` section), each with its range.

    :ivar size: the preset this started from (``sltrader run --size``).
    :ivar seed: the market's and the model's seed.
    :ivar symbols: symbols the exchange lists (the universe is drawn from them).
    :ivar universe: symbols scanned per cycle, the top by volume (at most ``symbols``).
    :ivar cycles: scan cycles the replay is generated for (and run).
    :ivar scan_interval_s: simulated seconds between scans (shorter than a candle).
    :ivar base_timeframe: the scanned timeframe (whole minutes: the market ticks in 1m).
    :ivar confirm_timeframes: a candidate's confirmation timeframes; a signal needs
        ``CONFIRM_NEEDED`` of them to agree.
    :ivar candles: base-timeframe candles per series (the features need ``min_candles``).
    :ivar confirm_candles: candles per confirmation series.
    :ivar min_candles: the shortest series the features accept.
    :ivar cache_capacity: series the cache holds (below the key space on purpose).
    :ivar latency: the latency profile, ``lan`` or ``wan``: it sets ``latency_ms`` and
        ``jitter`` (a ``latency_ms`` or ``jitter`` written in ``[host]`` wins over it) and
        ``wan`` adds a tail (:data:`LATENCY_PROFILES`).
    :ivar latency_ms: mean real latency per exchange request, jittered by ``jitter``.
    :ivar jitter: latency varies uniformly within ``latency_ms * (1 ± jitter)``.
    :ivar rate_limit_per_min: exchange requests per simulated minute (0: unlimited).
    :ivar fetch_timeout_s: the longest a read waits for one exchange request before the
        symbol is skipped (``SingleFlightCache``'s bound; unset: no bound, as the replay
        exchange never hangs; set it for an exchange that may).
    :ivar workers: worker threads of the scan.
    :ivar model: ``sgd`` (scikit-learn) or ``cheap`` (a dot product).
    :ivar buy_threshold: a prediction at least this is a buy candidate.
    :ivar sell_threshold: a prediction at most this is a sell candidate (below the buy one).
    :ivar hold_candles: a position is closed after this many base candles.
    :ivar max_positions: open positions at most (0: signals only, no paper orders).
    :ivar volume_churn: per-hour standard deviation of each symbol's log volume.
    """

    size: str = attrs.field(default="full", validator=one_of("full", "small"))
    seed: int = attrs.field(default=7, validator=integer(min=0, max=2**32 - 1))
    symbols: int = attrs.field(default=260, validator=integer(min=1, max=10_000))
    universe: int = attrs.field(default=240, validator=integer(min=1, max=10_000))
    cycles: int = attrs.field(default=160, validator=integer(min=1, max=100_000))
    scan_interval_s: float = attrs.field(default=7.5, validator=finite(above=0, max=86_400))
    base_timeframe: str = attrs.field(default="1m", validator=timeframe(unit=60))
    confirm_timeframes: tuple[str, ...] = attrs.field(
        default=("5m", "15m", "1h"), validator=timeframe_list(unit=60, min_count=CONFIRM_NEEDED)
    )
    candles: int = attrs.field(default=600, validator=integer(min=MIN_CANDLES, max=100_000))
    confirm_candles: int = attrs.field(
        default=60, validator=integer(min=TREND_CANDLES, max=10_000, why="a trend is 20 candles")
    )
    min_candles: int = attrs.field(
        default=500,
        validator=integer(
            min=MIN_CANDLES, max=100_000, why="the features' EMA window is 480 candles"
        ),
    )
    cache_capacity: int = attrs.field(default=360, validator=integer(min=1, max=1_000_000))
    latency: str = attrs.field(default="lan", validator=one_of(*LATENCY_PROFILES))
    latency_ms: float = attrs.field(default=4.0, validator=finite(min=0, max=10_000))
    jitter: float = attrs.field(default=0.5, validator=finite(min=0, max=1))
    rate_limit_per_min: int = attrs.field(default=3000, validator=integer(min=0, max=1_000_000))
    fetch_timeout_s: float | None = attrs.field(
        default=None, validator=finite(above=0, max=3600, optional=True)
    )
    workers: int = attrs.field(default=8, validator=integer(min=1, max=256))
    model: str = attrs.field(default="sgd", validator=one_of("sgd", "cheap"))
    buy_threshold: float = attrs.field(default=0.62, validator=finite(min=0, max=1))
    sell_threshold: float = attrs.field(default=0.38, validator=finite(min=0, max=1))
    hold_candles: int = attrs.field(default=5, validator=integer(min=1, max=10_000))
    max_positions: int = attrs.field(default=20, validator=integer(min=0, max=10_000))
    volume_churn: float = attrs.field(default=0.08, validator=finite(min=0, max=1))

    def __attrs_post_init__(self) -> None:
        if self.universe > self.symbols:
            raise SettingError(
                "universe", f"at most 'symbols' ({self.symbols}) per scan", self.universe
            )
        if self.candles < self.min_candles:
            raise SettingError(
                "candles", f"at least 'min_candles' ({self.min_candles})", self.candles
            )
        if self.buy_threshold <= self.sell_threshold:
            raise SettingError(
                "buy_threshold",
                f"a number above 'sell_threshold' ({self.sell_threshold})",
                self.buy_threshold,
            )

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

    def latency_profile(self) -> LatencyProfile:
        """What an exchange request costs: ``latency_ms`` and ``jitter``, with the tail of
        the ``latency`` profile."""
        return attrs.evolve(
            LATENCY_PROFILES[self.latency], mean_ms=self.latency_ms, jitter=self.jitter
        )

    def history_s(self) -> float:
        """Market history before the start: enough for every series the trader reads.

        The first term is what the measured workloads (a 1m base, confirmations up to 1h)
        were generated with, kept so their markets stay the same; the second covers any
        other timeframes.
        """
        longest = max(
            (self.candles + 2) * timeframe_seconds(self.base_timeframe),
            *((self.confirm_candles + 2) * timeframe_seconds(tf) for tf in self.confirm_timeframes),
        )
        return max((self.confirm_candles + 2) * 3600.0 + self.candles * 60.0, float(longest))

    def market(self) -> MarketConfig:
        """The market this workload trades: the same for every process given the same
        workload (the host's embedded exchange and a served one agree exactly). It
        depends on ``cycles`` too: the replay is generated for that many."""
        return MarketConfig(
            seed=self.seed,
            start=CLOCK_START,
            history_s=self.history_s(),
            horizon_s=self.cycles * self.scan_interval_s + 3600.0,
            volume_churn=self.volume_churn,
        )

    def trader(self, index: int) -> Workload:
        """Trader ``index`` of several on one market (``sltrader bench --traders``): its
        buy threshold 0.025 x ``index`` higher and its sell threshold as much lower,
        so traders decide differently on the same series (0: this workload).

        :raises ConfigError: a threshold leaves [0, 1].
        """
        if index == 0:
            return self
        step = 0.025 * index
        try:
            return attrs.evolve(
                self,
                buy_threshold=round(self.buy_threshold + step, 6),
                sell_threshold=round(self.sell_threshold - step, 6),
            )
        except SettingError as exc:
            raise ConfigError(
                f"trader {index}: its thresholds leave [0, 1] "
                f"({exc.reason(exc.expected, exc.value)}): use fewer traders"
            ) from None


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
    """The ``size`` preset, then the ``[host]`` section, then explicit overrides (the
    command line's ``--workers`` and so on; ``None`` is no override).

    A latency profile (``latency``, in the section or an override) replaces the preset's
    ``latency_ms`` and ``jitter`` with its own; ``latency_ms`` or ``jitter`` written in
    the section win over the profile.

    ``size`` is the caller's choice: the command line's ``--size``, else the section's
    ``size``; a different ``size`` in the section was overridden and is ignored.

    Every value is checked, the preset's together with the section's (``universe`` at
    most ``symbols``, say).

    :raises ConfigError: an unknown size, or a bad key or value in the section or the
        overrides: one line naming ``'host.<key>'`` or ``--<key>``.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown workload size {size!r}: expected one of {sorted(SIZES)}")
    section = dict(host_section or {})
    if section.pop("size", size) not in SIZES:
        raise ConfigError(
            f"'host.size': expected one of {sorted(SIZES)}, got {host_section['size']!r}"
        )
    preset = SIZES[size]
    merged = {field.name: getattr(preset, field.name) for field in attrs.fields(Workload)}
    given = {key: value for key, value in overrides.items() if value is not None}
    # A latency profile named in the section or on the command line sets latency_ms and
    # jitter; the section's own latency_ms and jitter win over it.
    profile = given.get("latency", section.get("latency"))
    if isinstance(profile, str) and profile in LATENCY_PROFILES:
        figures = LATENCY_PROFILES[profile]
        merged.update(latency_ms=figures.mean_ms, jitter=figures.jitter)
    workload = section_from(Workload, {**merged, **section}, "host")
    try:
        return attrs.evolve(workload, **given)
    except SettingError as exc:
        name = f"--{exc.key.replace('_', '-')}" if exc.key in given else f"'host.{exc.key}'"
        raise ConfigError(f"{name}: {exc.reason(exc.expected, exc.value)}") from None
