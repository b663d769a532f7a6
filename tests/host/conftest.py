"""Fixtures of the reference host's tests: a tiny market, cache and workload."""

from __future__ import annotations

import signal
import sys

import attrs
import pytest

from sltrader_plugins.host.exchange import MarketConfig, ReplayExchange, SimClock
from sltrader_plugins.host.loop import START
from sltrader_plugins.host.workload import SIZES, Workload

TINY_CYCLES = 16
SYMBOLS = ["BTC_USDT", "ETH/USDT", "1000PEPE-USD", "SOL_USDT", "XRP-USD"]


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START + 5.0)


@pytest.fixture
def market(clock: SimClock) -> MarketConfig:
    return MarketConfig(seed=3, start=clock.now(), history_s=64 * 3600.0, horizon_s=7200.0)


@pytest.fixture
def exchange(market: MarketConfig, clock: SimClock) -> ReplayExchange:
    return ReplayExchange(market, SYMBOLS, clock)


@pytest.fixture
def tiny() -> Workload:
    """The small workload, shortened: a run takes well under a second."""
    return attrs.evolve(SIZES["small"], cycles=TINY_CYCLES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked ``allocations`` counts allocations: skipped under a tracer, which
    allocates too. CI runs them in an environment without coverage (tox.ini)."""
    if tracing():
        skip = pytest.mark.skip(reason="a tracer (coverage) allocates too")
        for item in items:
            if item.get_closest_marker("allocations") is not None:
                item.add_marker(skip)


def tracing() -> bool:
    """A tracer runs (coverage: settrace, or sys.monitoring on 3.12+): it allocates too."""
    monitoring = getattr(sys, "monitoring", None)
    return sys.gettrace() is not None or (
        monitoring is not None and monitoring.get_tool(monitoring.COVERAGE_ID) is not None
    )


def default_sigint() -> None:
    """``Popen(preexec_fn=default_sigint)``: the child takes Ctrl-C as from a terminal, also
    when the tests were started in the background (a shell's ``&`` ignores SIGINT, and a
    child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
