from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import signal
import subprocess
import sys

import attrs
import numpy as np
import pytest

from sltrader_plugins import ConfigError, hookimpl
from sltrader_plugins.cli import main
from sltrader_plugins.host.exchange import ExchangeError, ReplayExchange
from sltrader_plugins.host.loop import Host
from sltrader_plugins.host.workload import SIZES, workload_from
from sltrader_plugins.manager import PluginManager
from tests.host.conftest import TINY_CYCLES as N
from tests.host.conftest import default_sigint, tracing
from tests.polling import wait_until


def run(workload, *plugins, exchange_wrapper=None, predictions=None):
    manager = PluginManager()
    for plugin in plugins:
        manager.register(plugin, type(plugin).__name__.lower())
    host = Host(workload, manager, predictions=predictions, wrap_exchange=exchange_wrapper)
    return host.run()


@pytest.fixture(scope="module")
def baseline():
    return run(attrs.evolve(SIZES["small"], cycles=N))


def test_small_run_reports_everything(baseline):
    r = baseline
    assert r.cycles == N and r.symbols_scanned == N * 30
    assert r.signals > 0 and r.orders > 0
    assert 0 < r.cache_hit_rate < 1
    assert sum(r.miss_causes.values()) == r.cache_misses
    assert sum(r.higher_timeframe_miss_causes.values()) == r.miss_causes["higher_timeframe"]
    assert r.exchange_requests >= r.cache_misses
    assert r.trained_samples > 0
    assert r.skipped == {} and r.plugin_faults == {}


def test_one_worker_and_many_workers_decide_the_same(tiny, baseline):
    one = run(attrs.evolve(tiny, workers=1))
    many = run(attrs.evolve(tiny, workers=8))
    assert one.decisions_digest == many.decisions_digest == baseline.decisions_digest
    assert one.signals == many.signals


class Recorder:
    """Checks the order and arguments of every hook call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active: dict[str, int] = {}
        self.services = None

    @hookimpl
    def on_start(self, services, settings):
        self.services = services
        self.settings = settings
        self.calls.append("on_start")

    @hookimpl
    def on_candle_close(self, timeframe, close_time, next_scan_time):
        assert close_time <= next_scan_time
        self.calls.append(f"close:{timeframe}")

    @hookimpl
    def before_scan(self, symbols, timeframe, now):
        self.calls.append("before_scan")

    @hookimpl
    def before_analyze_symbol(self, symbol, timeframe):
        self.active[symbol] = self.active.get(symbol, 0) + 1

    @hookimpl
    def after_analyze_symbol(self, symbol, timeframe):
        self.active[symbol] -= 1

    @hookimpl
    def on_scan_complete(self, symbols, timeframe, now):
        assert all(v == 0 for v in self.active.values())
        self.calls.append("scan_complete")

    @hookimpl
    def on_signal(self, signal):
        assert signal.timeframe == "1m"
        self.calls.append("signal")

    @hookimpl
    def report_metrics(self):
        return {"calls": len(self.calls)}

    @hookimpl
    def on_shutdown(self):
        self.calls.append("on_shutdown")


def test_hooks_called_in_order(tiny, baseline):
    rec = Recorder()
    r = run(tiny, rec)
    assert rec.calls[0] == "on_start" and rec.calls[-1] == "on_shutdown"
    assert rec.calls.count("before_scan") == rec.calls.count("scan_complete") == N
    assert rec.calls.count("signal") == r.signals
    assert rec.calls.count("close:1m") == 2  # 16 scans of 7.5 s pass two 1m closes
    assert r.plugin_metrics["recorder.calls"] > 0
    assert rec.services.workers == tiny.workers
    assert rec.services.confirm_timeframes == ("5m", "15m", "1h")
    assert rec.settings.name == "recorder" and rec.settings.section == {}
    assert r.decisions_digest == baseline.decisions_digest


class RaisingPredict:
    @hookimpl
    def before_predict(self, symbol, features, model):
        raise RuntimeError("batcher broke")


class RaisingBuffers:
    @hookimpl
    def on_feature_build(self, symbol, timeframe, n_candles):
        class B:
            def empty(self, n, dtype=np.float64):
                raise MemoryError("pool exhausted")

            def release(self):
                pass

        return B()


class WrongPredict:
    @hookimpl
    def before_predict(self, symbol, features, model):
        return float("nan")


class Predicting:
    @hookimpl
    def before_predict(self, symbol, features, model):
        return model.predict_batch([features])[0]


@pytest.mark.parametrize("plugin", [RaisingPredict, RaisingBuffers, WrongPredict, Predicting])
def test_faulty_or_helpful_plugins_keep_decisions(tiny, baseline, plugin, caplog):
    r = run(tiny, plugin())
    assert r.decisions_digest == baseline.decisions_digest
    assert r.skipped == {}
    if plugin is RaisingPredict:
        assert r.plugin_faults == {"raisingpredict.before_predict": N * 30}


class Flaky:
    """An exchange where some symbols fail, are unknown or serve NaN or short series."""

    def __init__(self, inner: ReplayExchange) -> None:
        self.inner = inner
        self.requests = 0

    def top_symbols(self, n):
        return [*self.inner.top_symbols(n - 4), "NOT/LISTED", "FAIL_USDT", "NAN-USD", "SHORT_USDT"]

    def fetch_klines(self, symbol, timeframe, limit):
        self.requests += 1
        if symbol == "FAIL_USDT":
            raise ExchangeError("HTTP 502")
        if symbol in ("NAN-USD", "SHORT_USDT"):
            k = self.inner.fetch_klines("BTC_USDT", timeframe, limit)
            close = k.close.copy()
            if symbol == "NAN-USD":
                close[-3] = np.nan
            else:
                arrays = ("open_time", "open", "high", "low", "close", "volume")
                return attrs.evolve(k, **{name: getattr(k, name)[-50:] for name in arrays})
            return attrs.evolve(k, symbol=symbol, close=close)
        return self.inner.fetch_klines(symbol, timeframe, limit)


def test_bad_input_is_skipped_with_a_reason(tiny, caplog):
    caplog.set_level(logging.WARNING)
    r = run(tiny, exchange_wrapper=Flaky)
    assert r.skipped == {
        "ExchangeError": N,
        "FeatureError": 2 * N,
        "UnknownSymbolError": N,
    }
    messages = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "NOT/LISTED" in messages and "HTTP 502" in messages and "NaN" in messages
    assert r.symbols_scanned == N * 26
    assert r.cycles == N


def test_internal_error_costs_one_symbol(tiny, monkeypatch):
    from sltrader_plugins.host import features

    original = features.FeatureEngine.build

    def build(self, symbol, timeframe, klines):
        if symbol == "BTC_USDT":
            raise ZeroDivisionError("bug")
        return original(self, symbol, timeframe, klines)

    monkeypatch.setattr(features.FeatureEngine, "build", build)
    r = run(tiny)
    assert r.skipped == {"internal": N}


def test_predictions_are_written(tiny):
    out = io.StringIO()
    run(tiny, predictions=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == N * 30
    cycle, _symbol, value = lines[0].split("\t")
    assert cycle == "0" and 0 <= float(value) <= 1


def post_close_cycles(w, n):
    """The cycles whose scan comes first after a base (1m) close, the first cycle excluded."""
    host_start = Host(w, PluginManager()).clock.now()
    minutes = [int((host_start + i * w.scan_interval_s) // 60) for i in range(n + 1)]
    return [i for i in range(1, n) if minutes[i + 1] > minutes[i]]


def test_scan_wall_split_into_cold_post_close_and_fresh_scans(baseline):
    post_close = post_close_cycles(SIZES["small"], N)
    assert baseline.stale_scans == len(post_close) > 1
    # The first scan is cold, apart; the three parts average back to the whole.
    fresh = N - 1 - len(post_close)
    mean = (
        baseline.scan_cold_s
        + baseline.scan_stale_s * len(post_close)
        + baseline.scan_fresh_s * fresh
    ) / N
    assert mean == pytest.approx(baseline.scan_wall_s, rel=1e-9)
    assert baseline.scan_cold_s == baseline.scan_times_s[0]
    # The plot's marks keep the first scan among the stale ones.
    assert [i for i, s in enumerate(baseline.stale) if s] == [0, *post_close]


def test_decision_latency_runs_from_the_scan_start_to_the_last_order(tiny):
    # A timer that moves one second per reading: a scan reads it twice (start and end),
    # each paper order once, and a cycle without an order once more at the end of its
    # decisions. So a close's latency is 1 + its orders, or 2 without an order.
    ticks = iter(range(1_000_000))
    host = Host(tiny, PluginManager(), timer=lambda: float(next(ticks)))
    orders = []

    def progress(done, total, seconds):
        orders.append(host.trading.orders - sum(orders))

    r = host.run(progress=progress)
    post_close = post_close_cycles(tiny, N)
    expected = [1.0 + max(orders[c], 1) for c in post_close]
    assert r.decision_latency_s == expected
    assert r.decision_latency_p50_s == pytest.approx(float(np.median(expected)))
    assert r.decision_latency_p99_s == pytest.approx(float(np.percentile(expected, 99)))
    assert any(orders[c] for c in post_close) and r.orders == sum(orders)
    assert r.scan_times_s == [1.0] * N and r.scan_cold_s == 1.0


def test_confirmation_reads_and_their_hit_rate(baseline):
    r = baseline
    assert r.confirm_reads > 0
    misses = r.miss_causes["higher_timeframe"]
    assert r.confirm_hit_rate == pytest.approx((r.confirm_reads - misses) / r.confirm_reads)
    # The overall hit rate counts them too: every read went through the cache.
    assert r.cache_hits + r.cache_misses == r.symbols_scanned + r.confirm_reads


def test_cycles_beyond_the_replay_refused(tiny):
    host = Host(tiny, PluginManager())
    with pytest.raises(ValueError, match="generated for"):
        host.run(cycles=tiny.cycles + 1)


def test_allocations_measured(tiny):
    host = Host(attrs.evolve(tiny, cycles=2), PluginManager())
    r = host.run(allocations=True)
    assert r.feature_alloc_bytes_per_build > 50_000
    # One thread's build costs CPU time, and less than the whole run's scans took.
    assert 0 < r.feature_build_uncontended_s < r.scan_wall_s
    if not tracing():  # a coverage tracer hides blocks from the probe (3.12+: all of them)
        assert r.feature_alloc_blocks_per_build > 0


def test_workload_config():
    w = workload_from("small", {"workers": 2, "latency_ms": 1}, model="cheap")
    assert (w.workers, w.latency_ms, w.model, w.size) == (2, 1.0, "cheap", "small")
    full = SIZES["full"]
    names = full.symbol_names()
    assert len(names) >= 200 and len(set(names)) == len(names)
    assert any("_" in n for n in names) and any("/" in n for n in names)
    assert "1000PEPE-USD" in names
    assert full.workers >= 8 and full.candles >= 500 and full.scan_interval_s < 60
    assert full.cache_capacity < full.symbols * (1 + len(full.confirm_timeframes))
    with pytest.raises(ConfigError, match="unknown workload size"):
        workload_from("huge")
    with pytest.raises(ConfigError, match="host"):
        workload_from("small", {"workers": "many"})
    with pytest.raises(ConfigError, match="workers"):
        workload_from("small", {"workers": 0})
    with pytest.raises(ConfigError):
        workload_from("small", {"bogus": 1})


# -- the commands, end to end -----------------------------------------------------------


@pytest.mark.slow
def test_sltrader_run_cli(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert (
        main(["run", "--size", "small", "--cycles", "6", "--plugins", "", "--json", str(out)]) == 0
    )
    captured = capsys.readouterr()
    assert "cache hit rate" in captured.out and "scan time" in captured.out
    assert "cycle 6/6" in captured.err
    report = json.loads(out.read_text())
    assert report["cycles"] == 6 and report["active_plugins"] == []
    assert len(report["scan_times_s"]) == 6 and report["model"]["predictions"] == 6 * 30


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--cycles", "0", "must be at least 1, got 0"),
        ("--seed", "-1", "must be at least 0, got -1"),
        ("--workers", "0", "must be at least 1, got 0"),
        ("--workers", "many", "expected an integer, got 'many'"),
    ],
)
def test_sltrader_run_rejects_bad_options_in_one_line(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["run", option, value, "--plugins", ""])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument {option}: {message}") and "Traceback" not in err


def test_sltrader_run_without_the_host_extra_says_what_to_install(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    for command in ("run", "bench"):
        assert main([command, "--plugins", ""]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "sltrader: error: the reference trader needs scikit-learn, its 'host' extra: "
            "python3 -m pip install 'sltrader-plugins[host]'"
        ]


class Interrupting:
    """Ctrl-C in the middle of a run (the third scan), as a signal would raise it."""

    def __init__(self) -> None:
        self.scans = 0

    @hookimpl
    def before_scan(self):
        self.scans += 1
        if self.scans == 3:
            raise KeyboardInterrupt


def test_ctrl_c_ends_the_run_with_the_report_of_the_cycles_done(tiny):
    manager = PluginManager()
    manager.register(Interrupting(), "interrupting")
    stopped = Stopping()
    manager.register(stopped, "stopping")
    host = Host(tiny, manager)
    report = host.run()
    assert host.interrupted and report.interrupted
    assert report.cycles == 2 and stopped.stopped
    assert report.symbols_scanned == 2 * tiny.universe


class Signalling:
    """Real SIGINTs to this process in the third scan's before_scan, ``times`` of them."""

    def __init__(self, times: int) -> None:
        self.scans, self.times = 0, times

    @hookimpl
    def before_scan(self):
        self.scans += 1
        if self.scans == 3:
            handler = signal.getsignal(signal.SIGINT)
            for n in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)
                if n + 1 < self.times:
                    # The main thread runs the handler when it next gets the GIL: two
                    # signals before it does are one Ctrl-C (a loaded machine's case).
                    assert wait_until(lambda: handler.__self__.requested)


@pytest.mark.parametrize(("times", "cycles"), [(1, 3), (2, 2)])
def test_ctrl_c_ends_the_run_after_the_cycle_in_progress_and_twice_at_once(tiny, times, cycles):
    manager = PluginManager()
    manager.register(Signalling(times), "signalling")
    stopped = Stopping()
    manager.register(stopped, "stopping")
    host = Host(tiny, manager)
    report = host.run()
    assert host.interrupted and report.interrupted
    assert report.cycles == cycles and stopped.stopped
    if times == 1:  # the cycle in progress ends
        assert report.symbols_scanned == cycles * tiny.universe
    else:  # at once: the symbols workers already hold finish, and count
        assert cycles * tiny.universe <= report.symbols_scanned < (cycles + 1) * tiny.universe
    # the run gave Python's own handler back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_ctrl_c_on_sltrader_run_exits_130_with_one_line_and_the_report():
    process = subprocess.Popen(
        [sys.executable, "-m", "sltrader_plugins.cli", "run", "--size", "full"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    assert process.stderr is not None
    while not process.stderr.readline().startswith("sltrader: cycle"):  # the run is on
        pass
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted after" in err
    assert "decisions digest" in out


@pytest.mark.slow
def test_sltrader_run_subprocess():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sltrader_plugins.cli",
            "run",
            "--size",
            "small",
            "--cycles",
            "4",
            "--plugins",
            "",
            "--quiet",
            "--model",
            "cheap",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "orders" in done.stdout and "active plugins    none" in done.stdout


@pytest.mark.slow
def test_sltrader_bench_cli(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--size",
            "small",
            "--repeats",
            "1",
            "--cycles",
            "6",
            "--sets",
            "none,none+nothing",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "skipping set 'none+nothing'" in captured.err
    result = json.loads(out.read_text())
    none = result["sets"]["none"]
    for metric in (
        "scan_wall_s",
        "scan_stale_s",
        "scan_fresh_s",
        "model_s_per_prediction",
        "predict_wait_p99_s",
        "feature_build_s",
        "feature_build_uncontended_s",
        "feature_alloc_bytes_per_build",
        "feature_alloc_blocks_per_build",
        "gc_gen0_per_1000_builds",
        "cache_hit_rate",
        "prefetches",
        "prefetch_waste_ratio",
        "exchange_requests",
        "rss_peak_bytes",
        "decisions_digest",
        "max_prediction_diff",
    ):
        assert metric in none, metric
    assert none["max_prediction_diff"] == 0.0
    assert result["workload"]["size"] == "small"
    assert "decisions digest" in captured.out
    # what docs render it with (tools/render_figures.py): how it was made, and where
    assert result["command"][:2] == ["sltrader", "bench"]
    assert result["machine"]["cpus"] >= 1


def test_bench_set_resolution():
    from sltrader_plugins.bench.reference import _max_diff, _median, resolve_sets

    assert resolve_sets("none,all,a+b,c", ["a", "b"]) == [
        ("none", ""),
        ("all", "a,b"),
        ("a+b", "a,b"),
        ("c", None),
    ]
    assert resolve_sets("all", []) == [("all", None)]
    assert _median([1, 3, 2]) == 2 and _median(["x", "x"]) == "x"
    assert _median(["x", "y"]) == "MIXED:x,y"
    assert _max_diff({("0", "A"): 0.5}, {("0", "A"): 0.25}) == 0.25
    assert _max_diff({("0", "A"): 0.5}, {}) == float("inf")


def test_bench_worker_in_process(tmp_path):
    from sltrader_plugins.bench import worker as bench_worker

    out, preds = tmp_path / "r.json", tmp_path / "p.tsv"
    args = ["--plugins", "", "--size", "small", "--cycles", "3", "--model", "cheap"]
    assert bench_worker.main([*args, "--out", str(out), "--predictions", str(preds)]) == 0
    report = json.loads(out.read_text())
    assert report["cycles"] == 3 and report["feature_alloc_bytes_per_build"] > 0
    assert len(preds.read_text().splitlines()) == 3 * 30


class BadMetric:
    @hookimpl
    def report_metrics(self):
        return {"text": "lots", "count": 3, "nan": float("nan"), "flag": True}


class NotAMapping:
    @hookimpl
    def report_metrics(self):
        return [("count", 3)]


def test_a_plugin_metric_that_is_not_a_number_costs_only_that_metric(tiny, caplog):
    with caplog.at_level(logging.WARNING):
        report = run(attrs.evolve(tiny, cycles=2), BadMetric(), NotAMapping())
    assert report.plugin_metrics == {"badmetric.count": 3.0}
    assert report.plugin_faults == {
        "badmetric.report_metrics": 1,
        "notamapping.report_metrics": 1,
    }
    assert "'text': 'lots'" in caplog.text and "not a mapping" in caplog.text


class Stopping:
    def __init__(self) -> None:
        self.stopped = False

    @hookimpl
    def on_shutdown(self):
        self.stopped = True


class RefusingConfig:
    @hookimpl
    def on_start(self):
        raise ConfigError("'plugins.refusing.size': expected an integer, got 'big'")


def test_a_plugin_refusing_its_config_stops_start_up_and_the_others_shut_down(tiny):
    stopping = Stopping()
    with pytest.raises(ConfigError, match=r"plugins\.refusing\.size"):
        run(attrs.evolve(tiny, cycles=2), stopping, RefusingConfig())
    assert stopping.stopped


def test_other_timeframes_get_enough_history():
    # A 15m base and a 4h confirmation need far more history than a 1m/1h workload.
    w = workload_from(
        "small",
        {"base_timeframe": "15m", "confirm_timeframes": ["1h", "4h"], "cycles": 4},
        model="cheap",
    )
    report = Host(w, PluginManager()).run()
    assert report.skipped == {} and report.symbols_scanned == 4 * w.universe


def test_a_report_before_the_run_is_all_zeros(tiny):
    report = Host(tiny, PluginManager()).report()
    assert (report.cycles, report.signals, report.symbols_scanned) == (0, 0, 0)
    assert report.scan_times_s == [] and report.decisions_digest == ""
