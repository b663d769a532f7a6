"""Fault injection: a plugin, the model, the cache or the exchange misbehaves in a real run.

Each case states the outcome docs/reliability.md promises. A plugin's fault never
changes a decision: the digest of every prediction, signal and order equals the
plugin-free run's. A model or exchange fault costs the symbols it touches, never the run.
"""

from __future__ import annotations

import threading
import time

import attrs
import numpy as np
import pytest

from sltrader_plugins import Klines, ModelAdapter, hookimpl, hookspecs
from sltrader_plugins.host.exchange import ExchangeError
from sltrader_plugins.host.loop import Host
from sltrader_plugins.manager import PluginManager

BOUND = 0.1  # hook_timeout_s of these runs: a hang is the point
# Every hook of the contract: a new hook is covered without a new case.
MAIN_LOOP_HOOKS = sorted(
    name
    for name in dir(hookspecs)
    if hasattr(getattr(hookspecs, name), "sltrader_spec") and name not in hookspecs.WORKER_HOOKS
)
CHECKED_RETURNS = {
    "before_predict",
    "serve_klines",
    "on_feature_build",
    "report_metrics",
    "report_summary",
}


@pytest.fixture(scope="module")
def baseline(tiny_module):
    return Host(tiny_module, PluginManager()).run()


@pytest.fixture(scope="module")
def tiny_module():
    from tests.host.conftest import SIZES, TINY_CYCLES

    return attrs.evolve(SIZES["small"], cycles=TINY_CYCLES)


def faulty_plugin(hook: str, behaviour: str, release: threading.Event) -> object:
    """A plugin implementing ``hook`` (any arguments) that raises, answers the wrong
    type, hangs until ``release``, or is slow."""

    def misbehave():
        if behaviour == "raises":
            raise RuntimeError(f"{hook} broke")
        if behaviour == "wrong type":
            return object()
        if behaviour == "hangs":
            release.wait(60)
        else:  # slow
            time.sleep(0.001)
        return None

    @hookimpl(specname=hook)
    def implementation(self):  # takes none of the hook's arguments: pluggy allows a subset
        return misbehave()

    return type("Faulty", (), {"implementation": implementation})()


def run_with(workload, plugin) -> tuple[dict, PluginManager]:
    manager = PluginManager(hook_timeout_s=BOUND)
    manager.register(plugin, "faulty")
    return Host(workload, manager).run(), manager


# A worker hook is not bounded by the manager (it is on the hot path): no "hangs" case.
CASES = [
    *((hook, b) for hook in MAIN_LOOP_HOOKS for b in ("raises", "wrong type", "hangs", "slow")),
    *(
        (hook, b)
        for hook in sorted(hookspecs.WORKER_HOOKS)
        for b in ("raises", "wrong type", "slow")
    ),
]


@pytest.mark.parametrize("hook, behaviour", CASES, ids=[f"{h}-{b}" for h, b in CASES])
def test_a_faulty_plugin_changes_no_decision(tiny_module, baseline, hook, behaviour):
    release = threading.Event()
    try:
        report, manager = run_with(tiny_module, faulty_plugin(hook, behaviour, release))
    finally:
        release.set()
    assert report.cycles == tiny_module.cycles
    assert report.decisions_digest == baseline.decisions_digest
    faults = manager.faults().get(f"faulty.{hook}", 0)
    if behaviour in ("raises", "hangs") or (behaviour == "wrong type" and hook in CHECKED_RETURNS):
        assert faults >= 1
    else:
        assert faults == 0


# -- the model -----------------------------------------------------------------------

SICK = "BTC_USDT"  # the symbol the faulty model fails on


class SickModel:
    """Wraps the host's learner: fails on the features of one symbol."""

    def __init__(self, inner, answer) -> None:
        self.inner = inner
        self.answer = answer
        self.sick_features: set[bytes] = set()

    def predict(self, features):
        if features.tobytes() in self.sick_features:
            return self.answer()
        return self.inner.predict(features)

    def predict_batch(self, rows):
        return [self.predict(row) for row in rows]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda: (_ for _ in ()).throw(RuntimeError("model down")), id="raises"),
        pytest.param(lambda: float("nan"), id="nan"),
        pytest.param(lambda: "0.7", id="wrong type"),
    ],
)
def test_a_failing_model_costs_the_symbols_it_fails_on(tiny_module, answer):
    host = Host(tiny_module, PluginManager())
    sick = SickModel(host.model.estimator, answer)
    engine_build = host.engine.build

    def build(symbol, timeframe, klines):
        features = engine_build(symbol, timeframe, klines)
        if symbol == SICK:
            sick.sick_features.add(features.tobytes())
        return features

    host.engine.build = build  # type: ignore[method-assign]
    host.model = ModelAdapter(sick)
    report = host.run()
    assert report.cycles == tiny_module.cycles
    assert report.skipped == {"model": tiny_module.cycles}
    assert report.symbols_scanned == tiny_module.cycles * (tiny_module.universe - 1)


def test_a_slow_model_decides_the_same(tiny_module, baseline):
    host = Host(tiny_module, PluginManager())
    learner = host.learner
    original = learner.predict_batch

    def slow(rows):
        time.sleep(0.0005)
        return original(rows)

    learner.predict_batch = slow  # type: ignore[method-assign]
    assert host.run().decisions_digest == baseline.decisions_digest


# -- the exchange (through the cache) ------------------------------------------------


class Misbehaving:
    """An exchange that misbehaves for one symbol: raises, answers a dict, or is slow."""

    def __init__(self, inner, how: str) -> None:
        self.inner = inner
        self.how = how
        self.requests = 0

    def top_symbols(self, n):
        return self.inner.top_symbols(n)

    def fetch_klines(self, symbol, timeframe, limit):
        self.requests += 1
        if symbol == SICK and self.how == "raises":
            raise ExchangeError("HTTP 503")
        if symbol == SICK and self.how == "wrong type":
            return {"close": [1.0, 2.0]}
        if self.how == "slow":
            time.sleep(0.002)
        return self.inner.fetch_klines(symbol, timeframe, limit)


@pytest.mark.parametrize("how", ["raises", "wrong type"])
def test_a_failing_exchange_costs_the_symbols_it_fails_on(tiny_module, how):
    host = Host(tiny_module, PluginManager(), wrap_exchange=lambda e: Misbehaving(e, how))
    report = host.run()
    assert report.cycles == tiny_module.cycles
    kind = "ExchangeError" if how == "raises" else "internal"
    assert report.skipped == {kind: tiny_module.cycles}


class UniverseDown:
    """An exchange whose universe request fails on every second call, the first included."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self.fetch_klines = inner.fetch_klines

    @property
    def requests(self) -> int:
        return self.inner.requests

    def top_symbols(self, n):
        self.calls += 1
        if self.calls % 2:
            raise ExchangeError("HTTP 429: Too many requests")
        return self.inner.top_symbols(n)


def test_a_failing_universe_request_costs_no_cycle(tiny_module):
    # The first cycle has no universe yet (it scans nothing), the others scan the last one.
    report = Host(tiny_module, PluginManager(), wrap_exchange=UniverseDown).run()
    assert report.cycles == tiny_module.cycles
    assert report.skipped == {"universe": (tiny_module.cycles + 1) // 2}
    assert report.symbols_scanned == tiny_module.universe * (tiny_module.cycles - 1)


def test_a_slow_exchange_decides_the_same(tiny_module, baseline):
    host = Host(tiny_module, PluginManager(), wrap_exchange=lambda e: Misbehaving(e, "slow"))
    assert host.run().decisions_digest == baseline.decisions_digest


def test_the_cache_refuses_what_is_not_klines(exchange, clock):
    from sltrader_plugins import SingleFlightCache

    cache = SingleFlightCache(lambda s, t, n: {"close": np.ones(3)}, clock, 4)
    with pytest.raises(TypeError, match="not Klines"):
        cache.get_klines("BTC_USDT", "1m")
    good = SingleFlightCache(exchange.fetch_klines, clock, 4)
    assert isinstance(good.get_klines("BTC_USDT", "1m"), Klines)


class Hanging(Misbehaving):
    """An exchange whose requests for SICK never return (until the test ends)."""

    def __init__(self, inner, release: threading.Event) -> None:
        super().__init__(inner, "hangs")
        self.release = release

    def fetch_klines(self, symbol, timeframe, limit):
        if symbol == SICK:
            self.release.wait(60)
        return super().fetch_klines(symbol, timeframe, limit)


def test_a_hanging_exchange_costs_its_symbol_when_fetches_are_bounded(tiny_module):
    release = threading.Event()
    workload = attrs.evolve(tiny_module, fetch_timeout_s=0.2)
    try:
        host = Host(workload, PluginManager(), wrap_exchange=lambda e: Hanging(e, release))
        report = host.run()
    finally:
        release.set()
    assert report.cycles == tiny_module.cycles
    assert report.skipped == {"TimeoutError": tiny_module.cycles}
    assert report.symbols_scanned == tiny_module.cycles * (tiny_module.universe - 1)


def test_hung_fetches_hold_a_bounded_number_of_threads(exchange, clock):
    from sltrader_plugins import SingleFlightCache

    release = threading.Event()

    def fetch(symbol, timeframe, limit):
        release.wait(60)
        return exchange.fetch_klines(symbol, timeframe, limit)

    cache = SingleFlightCache(fetch, clock, 8, fetch_timeout_s=0.05, max_hung_fetches=2)
    try:
        for symbol in ("BTC_USDT", "ETH/USDT"):
            with pytest.raises(TimeoutError, match=r"did not return within 0\.05 s"):
                cache.get_klines(symbol, "1m")
        with pytest.raises(TimeoutError, match="every fetch slot is held"):
            cache.get_klines("SOL_USDT", "1m")  # fails at once: no third thread
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the hung fetches return, their slots come back
        try:
            assert isinstance(cache.get_klines("SOL_USDT", "1m"), Klines)
            break
        except TimeoutError:
            time.sleep(0.01)
    else:
        raise AssertionError("the slots never came back")


# -- wrong answers ------------------------------------------------------------------
# Every hook whose answer the trader uses, answering every kind of wrong thing in turn:
# each is the plugin's fault (counted) and the trader's own answer is used.


class _Buffers:
    """Buffers that go wrong in one way."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.last: np.ndarray | None = None

    def empty(self, n, dtype=np.float64):
        if self.how == "raises":
            raise RuntimeError("pool broke")
        if self.how == "float32":
            return np.empty(n, dtype=np.float32)
        if self.how == "longer":
            return np.empty(n + 3, dtype=dtype)
        if self.how == "a list":
            return [0.0] * n
        if self.how == "one array twice" and self.last is not None and self.last.dtype == dtype:
            return self.last
        self.last = np.empty(n, dtype=dtype)
        return self.last

    def release(self):
        if self.how == "release raises":
            raise RuntimeError("release broke")


def _series(fetch, shift: float = 0.0, symbol: str | None = None, n: int | None = None):
    """A series for ``fetch`` whose newest candle closes ``shift`` s after it should."""
    from sltrader_plugins import timeframe_seconds

    step = timeframe_seconds(fetch.timeframe)
    n = fetch.limit if n is None else n
    opens = fetch.close_time + shift - step * np.arange(n, 0, -1, dtype=np.float64)
    ones = np.ones(n)
    return Klines(symbol or fetch.symbol, fetch.timeframe, opens, ones, ones, ones, ones, ones)


WRONG_ANSWERS = {
    "before_predict": [
        lambda **_: 2.5,
        lambda **_: -0.1,
        lambda **_: 1.0000001,
        lambda **_: float("nan"),
        lambda **_: float("inf"),
        lambda **_: -float("inf"),
        lambda **_: "0.5",
        lambda **_: True,
        lambda **_: np.float64(7.0),
        lambda **_: 10**400,
        lambda **_: object(),
    ],
    "on_feature_build": [
        lambda **_: _Buffers("raises"),
        lambda **_: _Buffers("float32"),
        lambda **_: _Buffers("longer"),
        lambda **_: _Buffers("a list"),
        lambda **_: _Buffers("one array twice"),
        lambda **_: _Buffers("release raises"),
        lambda **_: object(),
    ],
    "serve_klines": [
        lambda fetch: _series(fetch, shift=60.0),  # a candle not closed yet
        lambda fetch: _series(fetch, shift=-60.0),  # stale
        lambda fetch: _series(fetch, symbol="NOT_IT"),
        lambda fetch: _series(fetch, n=fetch.limit + 1),
        lambda fetch: "klines",
    ],
    "report_metrics": [
        lambda **_: {"x": float("nan")},
        lambda **_: {1: 2.0},
        lambda **_: ["not", "a", "mapping"],
        lambda **_: {"x": "1"},
    ],
}


def wrong_answerer(hook: str, answer) -> object:
    """A plugin answering ``hook`` with ``answer(**kwargs)`` every time."""
    if hook == "serve_klines":

        @hookimpl(specname=hook)
        def implementation(self, fetch):
            return answer(fetch=fetch)

    else:

        @hookimpl(specname=hook)
        def implementation(self):
            return answer()

    return type("Wrong", (), {"implementation": implementation})()


WRONG_CASES = [
    (hook, i) for hook, answers in sorted(WRONG_ANSWERS.items()) for i in range(len(answers))
]


@pytest.mark.parametrize("hook, i", WRONG_CASES, ids=[f"{h}-{i}" for h, i in WRONG_CASES])
def test_no_wrong_answer_changes_a_decision(tiny_module, baseline, hook, i, caplog):
    report, manager = run_with(tiny_module, wrong_answerer(hook, WRONG_ANSWERS[hook][i]))
    assert report.cycles == tiny_module.cycles
    assert report.decisions_digest == baseline.decisions_digest
    assert manager.faults().get(f"faulty.{hook}", 0) >= 1
    logged = [r for r in caplog.records if f"in hook {hook!r}" in r.getMessage()]
    assert len(logged) == 1  # logged once, counted every time
