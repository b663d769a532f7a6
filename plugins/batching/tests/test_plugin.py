"""The plugin through a real ``PluginManager``: hooks called with keywords, as a host does."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from batching_support import (
    FaultyModel,
    LinearModel,
    SingleOnlyModel,
    features_for,
    gated_model,
    join_within,
    run_threads,
    wait_until,
)

from sltrader_batching.plugin import BatchingPlugin
from sltrader_plugins import Config, ConfigError, ExchangeRequest, HostServices, KlineFetch
from sltrader_plugins.manager import PluginManager

FOREVER_MS = 60_000.0
LONG_MS = 30_000.0  # wait limit and timeout far above RELEASE_S (see test_batcher.py)
RELEASE_S = 5.0


class FakeClock:
    def now(self) -> float:
        return 1_700_000_000.0


def services(model: object, workers: int) -> HostServices:
    return HostServices(
        model=model,  # type: ignore[arg-type]
        cache=None,  # type: ignore[arg-type]
        clock=FakeClock(),
        base_timeframe="1m",
        workers=workers,
        confirm_timeframes=("5m",),
    )


def started(
    model: object, workers: int, section: dict | None = None, name: str = "batching"
) -> tuple[PluginManager, BatchingPlugin]:
    """The plugin registered as ``name``, started with ``section`` as its settings."""
    manager = PluginManager()
    manager.config = Config.from_mapping(
        {"plugins": {name: {"step_aside": False, **(section or {})}}}
    )
    plugin = BatchingPlugin()
    manager.register(plugin, name)
    manager.start(services(model, workers))
    return manager, plugin


def analyze(
    manager: PluginManager,
    model: object,
    symbol: str,
    features: np.ndarray,
    work: Callable[[], object] | None = None,
) -> float:
    """What the host's ``analyze_symbol`` does around its prediction."""
    manager.hook.before_analyze_symbol(symbol=symbol, timeframe="1m")
    try:
        if work is not None:
            work()  # fetching klines and building features
        result = manager.hook.before_predict(symbol=symbol, features=features, model=model)
        return model.predict(features) if result is None else result
    finally:
        manager.hook.after_analyze_symbol(symbol=symbol, timeframe="1m")


def metrics(manager: PluginManager) -> dict[str, float]:
    return manager.metrics()  # prefixed by the manager with the name registered under


def test_the_entry_point_names_the_plugin_class():
    (ep,) = [
        ep for ep in importlib.metadata.entry_points(group="sltrader") if ep.name == "batching"
    ]
    assert ep.load() is BatchingPlugin


def test_loaded_through_the_entry_point():
    manager = PluginManager()
    manager.load(Config(), cli="batching", environ={})
    assert manager.active_names() == ["batching"]
    hooks = set(manager.hooks_of("batching"))
    assert {"before_predict", "before_analyze_symbol", "after_analyze_symbol"} <= hooks
    assert {"before_exchange_request", "after_exchange_request"} <= hooks
    assert {"on_start", "on_shutdown", "on_scan_complete", "report_metrics"} <= hooks


def test_a_scan_through_the_manager_is_exact_and_batched():
    model = LinearModel()
    workers = 8
    manager, _ = started(model, workers, {"max_batch_size": 8, "max_wait_ms": 5})
    symbols = [f"S{i}_USDT" if i % 3 else f"S{i}/USD-T" for i in range(400)]
    results: dict[str, float] = {}
    lock = threading.Lock()
    queue = list(enumerate(symbols))

    pause = threading.Event()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, symbol = queue.pop()
            work = functools.partial(pause.wait, 0.0002 * (i % 5))  # uneven fetch + features
            value = analyze(manager, model, symbol, features_for(i, i * 7), work)
            with lock:
                results[symbol] = value

    run_threads([worker] * workers)
    manager.hook.on_scan_complete(symbols=symbols, timeframe="1m", now=0.0)
    assert results == {
        s: LinearModel.expected(features_for(i, i * 7)) for i, s in enumerate(symbols)
    }
    m = metrics(manager)
    assert all(name.startswith("batching.") for name in m)
    assert m["batching.requests"] == 400 and m["batching.batches"] > 0
    assert m["batching.max_batch_size_seen"] >= 2
    assert sum(model.batch_sizes) + model.single_calls == 400
    assert manager.faults() == {}
    manager.shutdown()


def test_one_worker_through_the_manager_never_waits():
    model = LinearModel()
    manager, _ = started(model, 1, {"max_wait_ms": FOREVER_MS})
    for i in range(200):
        assert analyze(manager, model, "BTC_USDT", features_for(0, i)) == LinearModel.expected(
            features_for(0, i)
        )
    m = metrics(manager)
    # nobody to batch with: each is handed back at once and predicted by the host
    assert m["batching.alone"] == 200 and m["batching.batches"] == 0
    assert model.batch_sizes == [] and model.single_calls == 200
    manager.shutdown()


def worker_at_exchange(
    manager: PluginManager, model: LinearModel, *, fetch_returns: bool
) -> tuple[threading.Thread, threading.Event]:
    """Start worker "B": it goes to the exchange (``before_exchange_request``) and, with
    ``fetch_returns``, is back from its request (``after_exchange_request``); then it holds
    there, before predicting, until the returned event is set."""
    reached, release = threading.Event(), threading.Event()

    def during() -> None:
        request = ExchangeRequest(1, KlineFetch("B", "1m", 10, 0.0))
        manager.hook.before_exchange_request(request=request)
        if fetch_returns:
            manager.hook.after_exchange_request(request=request)
        reached.set()
        release.wait(LONG_MS / 1000.0)

    other = threading.Thread(
        target=analyze, args=(manager, model, "B", features_for(1, 0), during), daemon=True
    )
    other.start()
    reached.wait(RELEASE_S)
    return other, release


def test_a_worker_in_an_exchange_request_is_not_waited_for():
    """Two workers: one predicts while the other is inside an exchange request (as the
    host's kline fetch announces with ``before_exchange_request``): no wait for it."""
    model = LinearModel()
    manager, _ = started(model, 2, {"max_wait_ms": FOREVER_MS, "timeout_ms": LONG_MS})
    manager.hook.before_scan(symbols=["A", "B"], timeframe="1m", now=0.0)
    # in its request until the other worker has predicted
    other, release = worker_at_exchange(manager, model, fetch_returns=False)
    started_at = time.perf_counter()
    assert analyze(manager, model, "A", features_for(0, 0)) == LinearModel.expected(
        features_for(0, 0)
    )
    assert time.perf_counter() - started_at < RELEASE_S  # not held for the wait limit
    release.set()
    join_within([other], RELEASE_S)
    assert metrics(manager)["batching.alone"] == 2
    manager.shutdown()


def test_a_worker_whose_kline_fetch_returned_is_waited_for_again():
    """``after_exchange_request`` ends the wait on the exchange: the worker is building its
    features, and the other's batch waits for it."""
    model = LinearModel()
    manager, plugin = started(model, 2, {"max_wait_ms": FOREVER_MS, "timeout_ms": LONG_MS})
    manager.hook.before_scan(symbols=["A", "B"], timeframe="1m", now=0.0)
    # back from its fetch and building its features, until the other waits
    other, release = worker_at_exchange(manager, model, fetch_returns=True)
    done: dict[int, float] = {}
    first = threading.Thread(
        target=lambda: done.setdefault(0, analyze(manager, model, "A", features_for(0, 0))),
        daemon=True,
    )
    first.start()
    assert plugin.batcher is not None
    wait_until(lambda: plugin.batcher._waiting == 1)  # tests only: parked in a batch
    time.sleep(0.05)
    assert not done  # the other worker is coming: the batch waits for it
    release.set()
    join_within([first, other], RELEASE_S)
    assert done == {0: LinearModel.expected(features_for(0, 0))}
    assert model.batch_sizes == [2]
    manager.shutdown()


def test_a_single_predict_error_reaches_the_callers_thread_not_the_fault_guard():
    """The host's own predict raises, as without the plugin; the plugin is not blamed."""

    class Broken(FaultyModel):
        def predict(self, features):
            raise ArithmeticError("diverged")

    def fail(features):
        raise RuntimeError("batch failed")

    model = Broken(fail)
    manager, _ = started(model, 4, {"max_batch_size": 4, "max_wait_ms": FOREVER_MS})
    errors: list[BaseException] = []
    together = threading.Barrier(4)

    def worker(i: int) -> None:
        try:
            analyze(manager, model, f"S{i}", features_for(i, 0), together.wait)
        except ArithmeticError as exc:
            errors.append(exc)

    run_threads([lambda i=i: worker(i) for i in range(4)])
    assert len(errors) == 4 and all(str(e) == "diverged" for e in errors)
    assert manager.faults() == {}  # the plugin never raised out of a hook
    assert metrics(manager)["batching.fallbacks"] == 4
    manager.shutdown()


def test_unbatchable_model_logs_once_at_start(caplog):
    model = SingleOnlyModel()
    with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
        manager, _ = started(model, 4)
        for i in range(20):
            analyze(manager, model, "ETH-USD", features_for(1, i))
    assert len([r for r in caplog.records if "has no predict_batch" in r.message]) == 1
    assert metrics(manager)["batching.unbatchable"] == 20
    manager.shutdown()


def park_untracked(
    manager: PluginManager, plugin: BatchingPlugin, model: object, out: dict[int, float]
) -> list[threading.Thread]:
    """Five callers waiting in one open batch that only a flush can release: untracked
    callers and an unknown worker count, a wait limit and timeout of LONG_MS."""
    plugin.batcher._workers = None  # tests only: a host that does not know its worker count

    def caller(i: int) -> None:
        result = manager.hook.before_predict(symbol="X", features=features_for(i, 1), model=model)
        out[i] = model.predict(features_for(i, 1)) if result is None else result

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: plugin.batcher._waiting == 5)
    return threads


LONG = {"max_batch_size": 64, "max_wait_ms": LONG_MS, "timeout_ms": LONG_MS}


def test_scan_complete_releases_waiting_callers_at_once():
    model = LinearModel()
    manager, plugin = started(model, 0, LONG)
    out: dict[int, float] = {}
    threads = park_untracked(manager, plugin, model, out)
    manager.hook.on_scan_complete(symbols=["X"], timeframe="1m", now=0.0)
    join_within(threads, RELEASE_S)  # woken by the flush, not by their 30 s timers
    assert out == {i: LinearModel.expected(features_for(i, 1)) for i in range(5)}
    assert metrics(manager)["batching.dispatch_flush"] == 1 and model.batch_sizes == [5]
    manager.shutdown()


def test_shutdown_with_pending_requests_answers_them():
    model = LinearModel()
    manager, plugin = started(model, 0, LONG)
    out: dict[int, float] = {}
    threads = park_untracked(manager, plugin, model, out)
    before = threading.active_count()
    started_at = time.perf_counter()
    manager.shutdown()  # may wait up to timeout_ms (30 s) for callers still inside
    assert time.perf_counter() - started_at < RELEASE_S
    join_within(threads, RELEASE_S)
    assert out == {i: LinearModel.expected(features_for(i, 1)) for i in range(5)}
    assert metrics(manager)["batching.dispatch_flush"] == 1
    assert threading.active_count() <= before
    # after shutdown: pass-through
    assert manager.hook.before_predict(symbol="X", features=features_for(0, 0), model=model) is None


def test_shutdown_warns_about_a_model_call_that_never_returns(caplog, runner):
    release = threading.Event()
    model = gated_model(release, timeout=30)
    manager, _ = started(
        model, 2, {"max_batch_size": 2, "timeout_ms": 30, "max_wait_ms": FOREVER_MS}
    )
    together = threading.Barrier(2)
    threads = [
        threading.Thread(
            target=analyze,
            args=(manager, model, f"S{i}", features_for(i, 0), together.wait),
            daemon=True,
        )
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: model.batch_calls == 1)
    with caplog.at_level(logging.WARNING, logger="sltrader_batching"):
        manager.shutdown()
    assert any("had not returned at shutdown" in r.message for r in caplog.records)
    release.set()
    for thread in threads:
        thread.join(10)


def test_hooks_before_start_are_no_ops():
    plugin = BatchingPlugin()
    plugin.before_analyze_symbol()
    plugin.after_analyze_symbol()
    assert plugin.before_predict(features_for(0, 0), LinearModel()) is None
    plugin.on_scan_complete()
    plugin.on_shutdown()
    assert plugin.report_metrics() is None and plugin.batcher is None


def test_config_errors_stop_start_up_and_name_the_key():
    with pytest.raises(ConfigError, match=r"plugins\.batching\.max_batch_size"):
        started(LinearModel(), 4, {"max_batch_size": "lots"})


def test_works_unchanged_under_another_name():
    model = LinearModel()
    # "enabled" is the manager's: the plugin never sees it, so it is no unknown key.
    manager, plugin = started(model, 1, {"enabled": True, "max_batch_size": 3}, name="other")
    assert plugin.config is not None and plugin.config.max_batch_size == 3
    assert analyze(manager, model, "BTC_USDT", features_for(0, 1)) == LinearModel.expected(
        features_for(0, 1)
    )
    m = metrics(manager)
    assert m and all(name.startswith("other.") for name in m)
    assert m["other.requests"] == 1
    assert manager.faults() == {}
    manager.shutdown()


@pytest.mark.parametrize("bad", [float("nan"), None, True, np.True_], ids=repr)
def test_a_batch_with_a_non_number_is_predicted_by_every_caller(bad, caplog):
    """The whole batch fails: each caller's host predicts; the plugin is not blamed."""

    class OneBad(LinearModel):
        def predict_batch(self, features):
            values = super().predict_batch(features)
            return [*values[:-1], bad]

    model = OneBad()
    manager, _ = started(model, 2, {"max_batch_size": 2, "max_wait_ms": FOREVER_MS})
    together = threading.Barrier(2)
    results: dict[int, float] = {}

    def worker(i: int) -> None:
        results[i] = analyze(manager, model, f"S{i}", features_for(i, 5), together.wait)

    with caplog.at_level(logging.ERROR, logger="sltrader_batching"):
        run_threads([lambda i=i: worker(i) for i in range(2)])
    assert results == {i: LinearModel.expected(features_for(i, 5)) for i in range(2)}
    assert all(type(v) is float for v in results.values())
    assert model.batch_sizes == [2] and model.single_calls == 2
    m = metrics(manager)
    assert m["batching.batch_errors"] == 1 and m["batching.fallbacks"] == 2
    assert [r.levelno for r in caplog.records if "predict_batch failed" in r.message] == [
        logging.ERROR
    ]
    assert manager.faults() == {}
    manager.shutdown()


def test_the_features_the_host_passes_are_not_modified():
    model = LinearModel()
    manager, _ = started(model, 2, {"max_batch_size": 2, "max_wait_ms": FOREVER_MS})
    arrays = [features_for(i, 3) for i in range(2)]
    copies = [a.copy() for a in arrays]
    together = threading.Barrier(2)
    run_threads([lambda a=a: analyze(manager, model, "S", a, together.wait) for a in arrays])
    for array, copy in zip(arrays, copies, strict=True):
        assert np.array_equal(array, copy)
    assert model.batch_sizes == [2]
    manager.shutdown()


def test_aside_every_prediction_is_handed_back_at_once():
    model = LinearModel()
    manager, plugin = started(model, 4, {"max_wait_ms": FOREVER_MS, "step_aside": True})
    assert plugin.payoff is not None and plugin.payoff.trials
    plugin.payoff.judge(False, "a trial found the trader's cycles no shorter")
    for i in range(50):
        assert analyze(manager, model, "BTC_USDT", features_for(0, i)) == LinearModel.expected(
            features_for(0, i)
        )
    m = metrics(manager)
    assert m["batching.stepped_aside"] == 1 and m["batching.requests"] == 0
    assert model.batch_sizes == [] and model.single_calls == 50
    manager.shutdown()
