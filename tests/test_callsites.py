"""``Plugins``: the call sites a trader of its own uses, and what the manager owns."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sltrader_plugins import (
    Config,
    ConfigError,
    Klines,
    NumpyBuffers,
    PluginManager,
    Plugins,
    PluginSettings,
    Signal,
    close_boundary,
    hookimpl,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


class SumModel:
    def predict(self, features: np.ndarray) -> float:
        return float(features.sum())


class Recorder:
    """Records every hook call; answers nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def add(self, *call) -> None:
        with self.lock:
            self.calls.append(call)

    @hookimpl
    def on_start(self, services, settings):
        self.add("on_start", settings)

    @hookimpl
    def before_scan(self, symbols, timeframe, now):
        self.add("before_scan", tuple(symbols), timeframe, now)

    @hookimpl
    def on_scan_complete(self, symbols, timeframe, now):
        self.add("on_scan_complete", tuple(symbols), timeframe, now)

    @hookimpl
    def before_analyze_symbol(self, symbol, timeframe):
        self.add("before", symbol, timeframe)

    @hookimpl
    def after_analyze_symbol(self, symbol, timeframe):
        self.add("after", symbol, timeframe)

    @hookimpl
    def on_signal(self, signal):
        self.add("on_signal", signal.symbol, signal.side, signal.timeframe)

    @hookimpl
    def on_candle_close(self, timeframe, close_time, next_scan_time):
        self.add("close", timeframe, close_time, next_scan_time)

    @hookimpl
    def on_shutdown(self):
        self.add("on_shutdown")


def started(*plugins, config: Config | None = None, now: float = 3600.0 * 24) -> Plugins:
    manager = PluginManager()
    manager.config = config or Config()
    for plugin in plugins:
        manager.register(plugin, type(plugin).__name__.lower())
    calls = Plugins(manager)
    calls.start(
        model=SumModel(),
        cache=None,  # type: ignore[arg-type]
        clock=Clock(now),
        base_timeframe="1m",
        workers=4,
        confirm_timeframes=["5m", "1h"],
    )
    return calls


class Refuses:
    @hookimpl
    def on_start(self):
        raise ConfigError("'plugins.refuses.size': expected an integer, got 'big'")


def test_a_refused_configuration_closes_the_plugins_that_started_before_it():
    recorder = Recorder()  # registered last: started first (pluggy's order)
    with pytest.raises(ConfigError, match=r"plugins\.refuses\.size"):
        started(Refuses(), recorder)
    assert [call[0] for call in recorder.calls] == ["on_start", "on_shutdown"]


def test_before_start_the_services_are_refused():
    with pytest.raises(RuntimeError, match="start"):
        Plugins(PluginManager()).scan(["X"])


def test_each_plugin_gets_its_own_settings_without_enabled():
    rec = Recorder()
    config = Config(plugins={"recorder": {"enabled": True, "size": 3}, "other": {"x": 1}})
    started(rec, config=config)
    assert rec.calls[0] == ("on_start", PluginSettings("recorder", {"size": 3}))


def test_scan_calls_before_and_complete_with_the_clock():
    rec = Recorder()
    plugins = started(rec)
    clock = plugins.services.clock
    with plugins.scan(["BTC_USDT", "ETH/USDT"]):
        clock.t += 2.0
    assert rec.calls[1:] == [
        ("before_scan", ("BTC_USDT", "ETH/USDT"), "1m", 86400.0),
        ("on_scan_complete", ("BTC_USDT", "ETH/USDT"), "1m", 86402.0),
    ]


def test_a_scan_that_raises_is_not_complete():
    rec = Recorder()
    plugins = started(rec)
    with pytest.raises(KeyError), plugins.scan(["X"], "5m"):
        raise KeyError("x")
    assert [c[0] for c in rec.calls] == ["on_start", "before_scan"]


def test_analyzing_pairs_before_and_after_in_the_worker_also_on_error():
    rec = Recorder()
    plugins = started(rec)

    def analyze(symbol: str) -> str:
        with plugins.analyzing(symbol):
            if symbol == "BAD-1":
                raise ValueError(symbol)
            return symbol

    symbols = [f"S_{i}" for i in range(200)] + ["BAD-1"]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(analyze, s) for s in symbols]
    assert sum(f.exception() is not None for f in futures) == 1
    before = sorted(c[1] for c in rec.calls if c[0] == "before")
    after = sorted(c[1] for c in rec.calls if c[0] == "after")
    assert before == after == sorted(symbols)


def test_candle_closes_announce_base_and_confirm_timeframes_once():
    rec = Recorder()
    plugins = started(rec, now=3600.0 * 24 + 5)  # 5 s after a day's close
    clock = plugins.services.clock
    assert plugins.candle_closes() == []
    clock.t += 3600.0
    announced = plugins.candle_closes(next_scan_time=clock.t + 1)
    assert [c for c in announced if c[0] == "1h"] == [("1h", 3600.0 * 25)]
    assert len([c for c in announced if c[0] == "5m"]) == 12
    assert len([c for c in announced if c[0] == "1m"]) == 60
    assert all(c[3] == clock.t + 1 for c in rec.calls if c[0] == "close")
    assert plugins.candle_closes() == []  # announced once


@pytest.mark.parametrize("back", [30.0, 3600.0 + 30.0], ids=["a-minute", "over-an-hour"])
def test_a_close_once_announced_is_not_announced_again_when_the_clock_steps_back(back):
    # A wall clock stepped back (an NTP correction) and forward again passes over closes
    # already announced: each is announced once, and the next new close still is.
    rec = Recorder()
    day = 3600.0 * 24
    plugins = started(rec, now=day + 3600.0 + 5)  # 5 s after an hour's close
    clock = plugins.services.clock
    clock.t += 60.0
    assert plugins.candle_closes() == [("1m", day + 3660.0)]
    clock.t -= back  # back, before that close (and before the hour's, for the longer step)
    assert plugins.candle_closes() == []
    clock.t += back  # forward over them again
    assert plugins.candle_closes() == []
    clock.t += 60.0
    assert plugins.candle_closes() == [("1m", day + 3720.0)]
    closes = [call[1:3] for call in rec.calls if call[0] == "close"]
    assert closes == [("1m", day + 3660.0), ("1m", day + 3720.0)]


def test_signal_passes_the_signal_and_its_timeframe():
    rec = Recorder()
    plugins = started(rec)
    plugins.signal(Signal("BTC-USD", "1m", "BUY", 0.8, 1.0))
    assert rec.calls[-1] == ("on_signal", "BTC-USD", "buy", "1m")


def test_close_shuts_down_once():
    rec = Recorder()
    with started(rec) as plugins:
        plugins.close()
    assert [c[0] for c in rec.calls].count("on_shutdown") == 1


class Answering:
    def __init__(self, answer) -> None:
        self.answer = answer

    @hookimpl
    def before_predict(self, symbol, features, model):
        return self.answer


class FailsToStart:
    @hookimpl
    def on_start(self, services, settings):
        raise RuntimeError("no")

    @hookimpl
    def on_feature_build(self, symbol, timeframe, n_candles):
        raise AssertionError("unregistered: never called")


def test_once_started_a_hook_no_plugin_implements_is_no_call():
    """Fixed at start: a hook without implementations costs the call sites nothing (not
    a pluggy call per symbol); one with an implementation answers as before."""
    plugins = started(Answering(0.25), FailsToStart())
    assert plugins.hook.before_predict(symbol="X", features=None, model=None) == 0.25
    # as pluggy answers with no implementation: None for an answer hook, [] for the others
    for name, nothing in [
        ("on_feature_build", None),
        ("serve_klines", None),
        ("before_analyze_symbol", []),
        ("before_scan", []),
        ("report_metrics", []),
    ]:
        hook = getattr(plugins.hook, name)
        assert hook is not getattr(plugins.manager.hook, name), name
        assert hook(symbol="X", timeframe="1m", n_candles=3) == nothing, name
    assert plugins.predict("X", np.array([1.0, 2.0])) == 0.25
    assert (
        plugins.build_features("X", "1m", 3, features_of).tolist()
        == features_of(NumpyBuffers()).tolist()
    )
    with plugins.analyzing("X"), plugins.scan(["X"]):
        pass
    assert plugins.faults() == {"failstostart.on_start": 1}


def test_predict_without_an_answer_calls_the_model():
    plugins = started()
    assert plugins.predict("X", np.array([1.0, 2.0])) == 3.0


@pytest.mark.parametrize("answer", [0.25, np.float32(0.25)])
def test_predict_takes_a_plugins_number(answer):
    plugins = started(Answering(answer))
    assert plugins.predict("X", np.array([1.0, 2.0])) == 0.25


class CountingModel:
    """A model that must not be called: counts its calls, answers 0.75."""

    def __init__(self, prediction_range=None) -> None:
        self.calls = 0
        if prediction_range is not None:
            self.prediction_range = prediction_range

    def predict(self, features: np.ndarray) -> float:
        self.calls += 1
        return 0.75


@pytest.mark.parametrize(
    "answer",
    [0.0, -0.0, 0, np.float64(0.0), np.float32(0.0)],
    ids=["0.0", "-0.0", "int-0", "float64-0", "float32-0"],
)
@pytest.mark.parametrize("prediction_range", [None, (0.0, 1.0)], ids=["no-range", "range"])
def test_a_plugins_answer_of_zero_is_taken_and_the_model_never_called(answer, prediction_range):
    # 0.0 is an answer (a probability of nothing, say), not "no answer": taken as it is,
    # also at the bottom of the model's range, and the model is not asked.
    model = CountingModel(prediction_range)
    plugins = started(Answering(answer))
    assert plugins.predict("X", np.array([1.0, 2.0]), model=model) == 0.0
    assert model.calls == 0
    assert plugins.faults() == {}


@pytest.mark.parametrize("answer", [float("nan"), True, "0.5", [0.5], float("inf")])
def test_a_prediction_that_is_not_a_finite_number_is_the_plugins_fault(answer):
    plugins = started(Answering(answer))
    assert plugins.predict("X", np.array([1.0, 2.0])) == 3.0
    assert plugins.faults() == {"answering.before_predict": 1}


class Lending:
    def __init__(self, buffers) -> None:
        self.buffers = buffers

    @hookimpl
    def on_feature_build(self, symbol, timeframe, n_candles):
        return self.buffers


class Counted(NumpyBuffers):
    def __init__(self) -> None:
        self.released = 0
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self.released += 1


def features_of(buffers) -> np.ndarray:
    """A tiny feature build in the shape the docs ask for: temporaries from the buffers."""
    x = buffers.empty(8)
    np.multiply(np.arange(8.0), 2.0, out=x)
    total = buffers.empty(1)
    np.sum(x, out=total, keepdims=True)
    return np.array([total[0], x[-1]])


def test_build_features_without_a_plugin_uses_numpy_buffers():
    np.testing.assert_array_equal(started().build_features("X", "1m", 8, features_of), [56, 14])


def test_build_features_releases_on_error_and_blames_the_data():
    counted = Counted()
    plugins = started(Lending(counted))

    def broken(buffers):
        buffers.empty(3)
        raise ZeroDivisionError("the data")

    with pytest.raises(ZeroDivisionError, match="the data"):
        plugins.build_features("X", "1m", 3, broken)
    with pytest.raises(ZeroDivisionError):
        plugins.build_features("X", "1m", 3, broken, data_errors=(ZeroDivisionError,))
    assert counted.released == 2 and plugins.faults() == {}


class Faulty(NumpyBuffers):
    def __init__(self, how: str) -> None:
        self.how = how

    def empty(self, n, dtype=np.float64):
        if self.how == "raise":
            raise MemoryError("pool exhausted")
        if self.how == "size":
            return np.empty(n + 1, dtype)
        if self.how == "2d":
            return np.empty((n, 2), dtype)
        return np.empty(n, dtype)

    def release(self) -> None:
        if self.how == "release":
            raise RuntimeError("double release")


@pytest.mark.parametrize("how", ["raise", "size", "2d", "release"])
def test_faulty_buffers_are_the_plugins_fault_and_the_features_stay_the_same(how, caplog):
    plugins = started(Lending(Faulty(how)))
    for _ in range(3):
        features = plugins.build_features("X", "1m", 8, features_of)
        np.testing.assert_array_equal(features, [56, 14])
    assert plugins.faults() == {"lending.on_feature_build": 3}
    assert caplog.text.count("'lending'") == 1


class Silent(NumpyBuffers):
    """Buffers whose wrong arrays numpy would use without an error."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.one = np.empty(4)

    def empty(self, n, dtype=np.float64):
        return np.empty(n, np.float32) if self.how == "float32" else self.one


def two_temporaries(buffers) -> np.ndarray:
    a, b = buffers.empty(4), buffers.empty(4)
    np.copyto(a, 1.0)
    np.copyto(b, 2.0)
    return np.array([a.sum(), b.sum()])


@pytest.mark.parametrize("how", ["float32"])
def test_buffers_that_would_change_the_features_silently_are_refused(how):
    plugins = started(Lending(Silent(how)))
    for _ in range(3):
        np.testing.assert_array_equal(plugins.build_features("X", "1m", 4, two_temporaries), [4, 8])
    assert plugins.faults() == {"lending.on_feature_build": 3}


def test_buffers_from_many_threads_are_released_once_each():
    counted = Counted()
    plugins = started(Lending(counted))
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: plugins.build_features("X", "1m", 8, features_of), range(2000))
        )
    assert all(r.tolist() == [56, 14] for r in results)
    assert counted.released == 2000 and plugins.faults() == {}


def test_the_close_time_convention_accepts_exchange_style_close_times():
    klines = Klines("ETH/USDT", "1h", [0.0, 3600.0], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1])
    assert klines.last_close_time == 7200.0
    assert close_boundary("1h", 7200.0 - 0.001) == close_boundary("1h", 7200.0) == 7200.0


def test_klines_refuse_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        Klines("X", "1m", [0.0, 60.0], [1, 1], [1, 1], [1, 1], [1.0], [1, 1])


def test_klines_do_not_change_the_callers_arrays():
    close = np.array([1.0, 2.0])
    klines = Klines("X", "1m", [0.0, 60.0], close, close, close, close, close)
    assert close.flags.writeable and not klines.close.flags.writeable


# -- the exchange: serve, pace, publish ----------------------------------------------

DAY = 3600.0 * 24  # the clock of started(): a 1m close


def series(symbol: str = "BTC_USDT", closes_at: float = DAY, n: int = 3) -> Klines:
    open_time = closes_at - 60.0 * np.arange(n, 0, -1)
    price = np.linspace(1.0, 2.0, n)
    return Klines(symbol, "1m", open_time, price, price, price, price, price)


class Exchange:
    def __init__(self, fails: bool = False) -> None:
        self.fetches: list[tuple] = []
        self.fails = fails

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        self.fetches.append((symbol, timeframe, limit))
        if self.fails:
            raise ConnectionError("exchange down")
        return series(symbol)


class Sharing:
    """Serves ``served`` (if any) and records every exchange hook, in order, with the
    object each was given."""

    def __init__(self, served: Klines | None = None) -> None:
        self.served = served
        self.events: list[tuple] = []
        self.given: list[object] = []

    @hookimpl
    def before_fetch_klines(self, fetch):
        self.given.append(fetch)
        self.events.append(("fetch", fetch.symbol, fetch.timeframe, fetch.limit, fetch.close_time))

    @hookimpl
    def serve_klines(self, fetch):
        self.given.append(fetch)
        self.events.append(("serve?",))
        return self.served

    @hookimpl
    def before_exchange_request(self, request):
        self.given.append(request)
        self.events.append(("away", request.weight))

    @hookimpl
    def pace_exchange_request(self, request):
        self.given.append(request)
        self.events.append(("pace", request.weight))

    @hookimpl
    def after_exchange_request(self, request):
        self.given.append(request)
        self.events.append(("back",))

    @hookimpl
    def after_fetch_klines(self, fetch, klines):
        self.given.append(fetch)
        self.events.append(("published", fetch.symbol, klines is not None))


def test_a_fetch_nobody_serves_calls_the_exchange_hooks_in_the_stated_order():
    sharing, exchange = Sharing(), Exchange()
    fetch = started(sharing).fetching(exchange.fetch_klines)
    klines = fetch("BTC_USDT", "1m", 3)
    assert klines.last_close_time == DAY
    assert exchange.fetches == [("BTC_USDT", "1m", 3)]
    assert sharing.events == [
        ("fetch", "BTC_USDT", "1m", 3, DAY),
        ("serve?",),
        ("away", 1),
        ("pace", 1),
        ("back",),
        ("published", "BTC_USDT", True),
    ]
    # One object per fetch and one per request, handed to every hook of it: a plugin
    # matches its before_ and after_ by identity.
    asked, request = sharing.given[0], sharing.given[2]
    assert sharing.given == [asked, asked, request, request, request, asked]
    assert request.fetch is asked


def test_two_fetches_of_one_series_get_two_objects():
    sharing = Sharing()
    fetch = started(sharing).fetching(Exchange().fetch_klines)
    fetch("BTC_USDT", "1m", 3)
    fetch("BTC_USDT", "1m", 3)
    first, second = sharing.given[0], sharing.given[6]
    assert first is not second and first != second and len({first, second}) == 2


def test_a_served_series_is_not_fetched():
    sharing, exchange = Sharing(served=series()), Exchange()
    plugins = started(sharing)
    assert plugins.fetching(exchange.fetch_klines)("BTC_USDT", "1m", 3) is sharing.served
    assert exchange.fetches == []
    assert [e[0] for e in sharing.events] == ["fetch", "serve?"]
    assert plugins.faults() == {}


@pytest.mark.parametrize(
    "served, why",
    [
        (series(closes_at=DAY - 60.0), "stale"),
        (series(closes_at=DAY + 60.0), "not closed yet"),
        (series("ETH_USDT"), "another symbol"),
        (series(n=4), "longer than the limit"),
        ("candles", "not Klines"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_series_the_exchange_could_not_answer_now_is_the_plugins_fault(served, why):
    sharing, exchange = Sharing(served=served), Exchange()
    plugins = started(sharing)
    klines = plugins.fetching(exchange.fetch_klines)("BTC_USDT", "1m", 3)
    assert klines is not served and klines.last_close_time == DAY  # the exchange's
    assert exchange.fetches == [("BTC_USDT", "1m", 3)], why
    assert plugins.faults() == {"sharing.serve_klines": 1}


def test_a_failed_fetch_is_announced_and_its_error_reaches_the_caller():
    sharing = Sharing()
    fetch = started(sharing).fetching(Exchange(fails=True).fetch_klines)
    with pytest.raises(ConnectionError, match="exchange down"):
        fetch("BTC_USDT", "1m", 3)
    assert sharing.events[-2:] == [("back",), ("published", "BTC_USDT", False)]


def test_other_exchange_requests_get_the_request_hooks_around_them():
    sharing = Sharing()
    plugins = started(sharing)
    with plugins.exchange_request(weight=2) as request:
        assert sharing.events == [("away", 2), ("pace", 2)]
    assert sharing.events[-1] == ("back",)
    assert request.fetch is None and sharing.given == [request] * 3
    with pytest.raises(KeyError), plugins.exchange_request():
        raise KeyError("the request failed")
    assert sharing.events[-1] == ("back",) and len(sharing.events) == 6


class Interrupted(Sharing):
    @hookimpl
    def pace_exchange_request(self, request):
        raise KeyboardInterrupt  # not an Exception: the guard lets it through


def test_a_request_interrupted_while_paced_still_gets_its_after():
    sharing = Interrupted()
    with pytest.raises(KeyboardInterrupt), started(sharing).exchange_request():
        pass
    assert [e[0] for e in sharing.events] == ["away", "back"]


class Forming(Exchange):
    """An exchange that answers with the candle still forming as its newest."""

    def fetch_klines(self, symbol: str, timeframe: str, limit: int) -> Klines:
        self.fetches.append((symbol, timeframe, limit))
        return series(symbol, closes_at=DAY + 60.0, n=limit)


class Publishing:
    def __init__(self) -> None:
        self.published: list[Klines | None] = []

    @hookimpl
    def after_fetch_klines(self, fetch, klines):
        self.published.append(klines)


def test_plugins_are_never_shown_a_candle_that_has_not_closed():
    publishing = Publishing()
    fetch = started(publishing).fetching(Forming().fetch_klines)
    fetch("BTC_USDT", "1m", 3)
    (seen,) = publishing.published
    assert seen is not None and seen.n == 2 and seen.last_close_time == DAY


class Ordered:
    """Records its calls in a shared list; answers ``before_predict`` with ``answer``."""

    def __init__(self, name: str, calls: list, answer=None) -> None:
        self.name, self.calls, self.answer = name, calls, answer

    @hookimpl
    def before_scan(self, symbols):
        self.calls.append(self.name)
        return self.name

    @hookimpl
    def before_predict(self, symbol):
        self.calls.append(self.name)
        return self.answer


class First(Ordered):
    @hookimpl(tryfirst=True)
    def before_scan(self, symbols):
        self.calls.append(self.name)
        return self.name


@pytest.mark.parametrize(
    "answers", [(None, None, None), (None, 0.25, 0.75), (0.5, None, 0.75), (None, None, 0.0)]
)
def test_the_fixed_hooks_call_as_pluggy_calls_in_order_and_answer_alike(answers):
    calls: list[str] = []
    # started() registers each under its class's name
    plugins = started(
        type("B", (Ordered,), {})("b", calls, answers[0]),
        type("Z", (First,), {})("z", calls, answers[1]),
        type("A", (Ordered,), {})("a", calls, answers[2]),
    )
    kwargs = {"symbols": ["X"], "timeframe": "1m", "now": 0.0}
    assert plugins.hook.before_scan(**kwargs) == plugins.manager.hook.before_scan(**kwargs)
    half = len(calls) // 2
    assert calls[:half] == calls[half:] == ["z", "a", "b"]  # tryfirst, then by name
    calls.clear()
    kwargs = {"symbol": "X", "features": None, "model": None}
    fixed = plugins.hook.before_predict(**kwargs)
    relayed = plugins.manager.hook.before_predict(**kwargs)
    assert (fixed is None) == (relayed is None)
    if fixed is not None:
        assert (float(fixed), fixed.plugin) == (float(relayed), relayed.plugin)
    half = len(calls) // 2
    assert calls[:half] == calls[half:]


def test_a_fixed_hook_still_guards_each_plugin():
    class Raising:
        @hookimpl
        def before_analyze_symbol(self, symbol):
            raise RuntimeError("no")

    calls: list[str] = []

    class Counting:
        @hookimpl
        def before_analyze_symbol(self, symbol):
            calls.append(symbol)

    plugins = started(Raising(), Counting())
    with plugins.analyzing("X"):
        pass
    assert calls == ["X"] and plugins.faults() == {"raising.before_analyze_symbol": 1}
