"""Main-loop hooks are bounded: a plugin that hangs costs the loop at most hook_timeout_s."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sltrader_plugins import (
    Config,
    ConfigError,
    PluginManager,
    Plugins,
    hookimpl,
    nonblocking,
    nonblocking_while,
)
from sltrader_plugins.bounded import DaemonThreads, Outcome
from tests.polling import wait_until

BOUND = 0.2  # the tests' hook_timeout_s: short, as a hang is the point
LONG = 60.0  # what a hung plugin would cost without the bound


class Hanging:
    """Hangs in the hooks named in ``hang`` until ``release`` is set."""

    def __init__(self, *hang: str) -> None:
        self.hang = set(hang)
        self.release = threading.Event()
        self.calls: list[str] = []

    def _maybe_hang(self, hook: str) -> None:
        self.calls.append(hook)
        if hook in self.hang:
            self.release.wait(LONG)

    @hookimpl
    def on_start(self):
        self._maybe_hang("on_start")

    @hookimpl
    def before_scan(self, symbols):
        self._maybe_hang("before_scan")

    @hookimpl
    def on_scan_complete(self, symbols):
        self._maybe_hang("on_scan_complete")

    @hookimpl
    def on_shutdown(self):
        self._maybe_hang("on_shutdown")

    @hookimpl
    def report_metrics(self):
        self._maybe_hang("report_metrics")
        return {"calls": len(self.calls)}


class Counting:
    def __init__(self) -> None:
        self.scans = 0

    @hookimpl
    def before_scan(self, symbols):
        self.scans += 1


def manager_with(*plugins) -> PluginManager:
    manager = PluginManager(hook_timeout_s=BOUND)
    for plugin in plugins:
        manager.register(plugin, type(plugin).__name__.lower())
    return manager


def timed(call) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def test_a_hanging_hook_is_abandoned_skipped_while_it_runs_and_resumed_after(caplog):
    hanging, counting = Hanging("before_scan"), Counting()
    manager = manager_with(hanging, counting)
    scan = lambda: manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)  # noqa: E731
    assert timed(scan) < LONG / 2  # the bound, not the hang
    assert timed(scan) < LONG / 2  # skipped at once: its first call still runs
    assert counting.scans == 2  # the other plugin is not held up
    assert hanging.calls == ["before_scan"]
    assert manager.faults() == {"hanging.before_scan": 2}
    assert "did not return within 0.2 s" in caplog.text
    hanging.release.set()
    hanging.hang.clear()
    deadline = time.monotonic() + 10
    while len(hanging.calls) < 2 and time.monotonic() < deadline:
        scan()  # once the abandoned call returned, the plugin is called again
        time.sleep(0.01)
    assert hanging.calls[:2] == ["before_scan", "before_scan"]


def test_a_plugin_hanging_in_on_start_is_unregistered():
    hanging = Hanging("on_start")
    manager = manager_with(hanging)
    manager.start(services=None)  # type: ignore[arg-type]
    assert manager.active_names() == []
    assert manager.faults() == {"hanging.on_start": 1}
    hanging.release.set()


class Refusing:
    @hookimpl
    def on_start(self):
        raise ConfigError("'plugins.refusing.size': expected an integer, got 'big'")


def test_a_configuration_error_still_stops_start_up_from_the_hook_thread():
    with pytest.raises(ConfigError, match=r"plugins\.refusing\.size"):
        manager_with(Refusing()).start(services=None)  # type: ignore[arg-type]


def test_metrics_of_a_hanging_plugin_are_left_out_not_waited_for():
    hanging, counting = Hanging("report_metrics"), Counting()
    manager = manager_with(hanging, counting)
    assert manager.metrics() == {}
    assert manager.faults() == {"hanging.report_metrics": 1}
    hanging.release.set()


def test_shutdown_waits_at_most_the_shorter_bound():
    hanging = Hanging("on_shutdown")
    manager = manager_with(hanging)
    manager.hook_timeout_s = LONG
    assert timed(lambda: manager.shutdown(bound=BOUND)) < LONG / 2
    assert manager.faults() == {"hanging.on_shutdown": 1}
    hanging.release.set()


@pytest.mark.parametrize(
    ("hook_timeout_s", "bound", "effective"),
    [(BOUND, LONG, BOUND), (LONG, BOUND, BOUND), (None, BOUND, BOUND), (BOUND, None, BOUND)],
    ids=["a-longer-bound-does-not-extend", "a-shorter-one-shortens", "in-place-of-none", "none"],
)
def test_close_waits_at_most_the_shorter_of_its_bound_and_hook_timeout_s(
    hook_timeout_s, bound, effective
):
    # Plugins.close(bound): min(bound, hook_timeout_s), never the bound alone (a trader
    # closing with a generous bound must not wait longer than it configured).
    hanging = Hanging("on_shutdown")
    manager = manager_with(hanging)
    manager.hook_timeout_s = hook_timeout_s
    try:
        took = timed(lambda: Plugins(manager).close(bound))
        assert manager.hook_timeout_s == effective
        assert took < LONG / 2  # the effective bound, not the hang (nor LONG)
        assert manager.faults() == {"hanging.on_shutdown": 1}
    finally:
        hanging.release.set()


def test_without_a_bound_hooks_run_in_the_callers_thread():
    seen = []

    class Where:
        @hookimpl
        def before_scan(self):
            seen.append(threading.current_thread())

    manager = PluginManager(hook_timeout_s=None)
    manager.register(Where(), "where")
    manager.hook.before_scan(symbols=[], timeframe="1m", now=0.0)
    assert seen == [threading.current_thread()]


def test_a_hook_that_never_returns_does_not_keep_the_process_alive(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            from sltrader_plugins import PluginManager, hookimpl

            class Forever:
                @hookimpl
                def on_shutdown(self):
                    threading.Event().wait()

            manager = PluginManager(hook_timeout_s=0.2)
            manager.register(Forever(), "forever")
            manager.shutdown()
            print("done", manager.faults())
            """
        )
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=LONG
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done {'forever.on_shutdown': 1}"
    assert time.monotonic() - start < LONG / 2


def test_the_bound_comes_from_the_configuration():
    manager = PluginManager()
    manager.load(Config.from_mapping({"hook_timeout_s": 2}), environ={}, entry_points=[])
    assert manager.hook_timeout_s == 2


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "10", 3601])
def test_a_wrong_bound_is_one_line(value):
    with pytest.raises(
        ConfigError, match=r"^'hook_timeout_s': expected a finite number in \(0, 3600\], got"
    ):
        Config.from_mapping({"hook_timeout_s": value})


# -- the hand-over itself ----------------------------------------------------------


def fresh(limit: int = 1, idle_s: float = math.inf) -> DaemonThreads:
    """Threads with a name no other test's have (one, as the manager's for a plugin)."""
    return DaemonThreads(f"sltrader-test-{next(_FRESH)}", limit, idle_s)


_FRESH = itertools.count()


def hook_threads(threads: DaemonThreads) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == threads.name]


def test_calls_are_answered_in_order_each_with_its_own_result_or_error():
    thread = fresh()

    def answer(n):
        if n % 7 == 3:
            raise ValueError(n)
        return n * 2

    for n in range(2000):
        if n % 7 == 3:
            with pytest.raises(ValueError, match=f"^{n}$"):
                thread.call(answer, (n,), {}, LONG)
        else:
            assert thread.call(answer, (n,), {}, LONG) == (Outcome.DONE, n * 2)
    assert len(hook_threads(thread)) == 1  # one thread serves them all
    thread.stop()
    assert wait_until(lambda: not hook_threads(thread))


def test_an_abandoned_call_blocks_later_ones_until_it_returns_then_its_thread_serves_again():
    thread, release = fresh(), threading.Event()
    assert thread.call(release.wait, (LONG,), {}, BOUND) == (Outcome.OVERRAN, None)
    assert thread.call(lambda: 1, (), {}, LONG) == (Outcome.BUSY, None)
    release.set()
    assert wait_until(lambda: thread.call(lambda: 2, (), {}, LONG) == (Outcome.DONE, 2))
    assert len(hook_threads(thread)) == 1  # the abandoned call's thread, serving again
    thread.stop()
    assert wait_until(lambda: not hook_threads(thread))


def test_stop_ends_an_abandoned_calls_thread_when_it_returns_and_later_calls_leave_none():
    thread, release = fresh(), threading.Event()
    assert thread.call(release.wait, (LONG,), {}, BOUND)[0] is Outcome.OVERRAN
    thread.stop()
    thread.stop()  # twice is harmless
    assert thread.call(lambda: 1, (), {}, LONG)[0] is Outcome.BUSY  # still one at a time
    release.set()
    assert wait_until(lambda: not hook_threads(thread))  # it ended with its call
    for n in range(3):  # a report after stop: each on a thread that ends with it
        assert thread.call(lambda n=n: n, (), {}, LONG) == (Outcome.DONE, n)
    assert wait_until(lambda: not hook_threads(thread))


# -- nonblocking implementations -------------------------------------------------------


class Marked:
    """``before_scan`` marked nonblocking; ``on_scan_complete`` not."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}

    @hookimpl
    @nonblocking
    def before_scan(self, symbols):
        self.threads["before_scan"] = threading.current_thread()
        if symbols == ["RAISE"]:
            raise RuntimeError("a fault in a nonblocking hook")

    @hookimpl
    def on_scan_complete(self):
        self.threads["on_scan_complete"] = threading.current_thread()


def test_a_nonblocking_hook_runs_in_the_callers_thread_and_its_faults_are_still_caught():
    marked = Marked()
    manager = manager_with(marked)
    manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
    manager.hook.on_scan_complete(symbols=["X"], timeframe="1m", now=0.0)
    assert marked.threads["before_scan"] is threading.current_thread()
    assert marked.threads["on_scan_complete"] is not threading.current_thread()
    assert manager.hook.before_scan(symbols=["RAISE"], timeframe="1m", now=0.0) == []
    assert manager.faults() == {"marked.before_scan": 1}


def test_a_nonblocking_hook_still_runs_while_a_bounded_call_of_its_plugin_hangs():
    class HangsOnComplete(Marked):
        release = threading.Event()

        @hookimpl
        def on_scan_complete(self):
            self.release.wait(LONG)

    plugin = HangsOnComplete()
    manager = manager_with(plugin)
    try:
        manager.hook.on_scan_complete(symbols=[], timeframe="1m", now=0.0)  # abandoned
        manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
        assert plugin.threads["before_scan"] is threading.current_thread()
        assert manager.faults() == {"hangsoncomplete.on_scan_complete": 1}
    finally:
        HangsOnComplete.release.set()


class SitsOut:
    """``before_scan`` runs in the main loop while the plugin is idle, bounded otherwise."""

    def __init__(self, idle: bool) -> None:
        self.idle = idle
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    @hookimpl
    @nonblocking_while(lambda plugin: plugin.idle)
    def before_scan(self, symbols):
        self.threads.append(threading.current_thread())
        if symbols == ["HANG"]:
            self.release.wait(LONG)
        if symbols == ["RAISE"]:
            raise RuntimeError("a fault while idle")


def test_a_hook_nonblocking_while_idle_runs_in_the_main_loop_only_while_its_test_holds():
    plugin = SitsOut(idle=True)
    manager = manager_with(plugin)
    main = threading.current_thread()
    manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
    plugin.idle = False
    manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
    plugin.idle = True
    manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
    assert [thread is main for thread in plugin.threads] == [True, False, True]
    # Idle, its faults are caught and counted as any call's.
    assert manager.hook.before_scan(symbols=["RAISE"], timeframe="1m", now=0.0) == []
    assert manager.faults() == {"sitsout.before_scan": 1}


def test_a_hook_nonblocking_while_idle_is_bounded_when_not():
    plugin = SitsOut(idle=False)
    manager = manager_with(plugin)
    manager.hook_timeout_s = 0.05
    try:
        manager.hook.before_scan(symbols=["HANG"], timeframe="1m", now=0.0)  # abandoned
        assert manager.faults() == {"sitsout.before_scan": 1}
        plugin.idle = True  # idle, it runs in the main loop even while the hung call runs
        manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0)
        assert plugin.threads[-1] is threading.current_thread()
    finally:
        plugin.release.set()


def test_a_failing_idle_test_is_the_hooks_fault():
    class Broken(SitsOut):
        @hookimpl
        @nonblocking_while(lambda plugin: plugin.no_such_flag)
        def before_scan(self, symbols):
            self.threads.append(threading.current_thread())

    plugin = Broken(idle=True)
    manager = manager_with(plugin)
    assert manager.hook.before_scan(symbols=["X"], timeframe="1m", now=0.0) == []
    assert plugin.threads == [] and manager.faults() == {"broken.before_scan": 1}


def test_at_most_limit_calls_run_hung_ones_included_and_a_freed_thread_serves_again():
    threads, release = fresh(limit=3), threading.Event()
    for _ in range(3):
        assert threads.call(release.wait, (LONG,), {}, 0.01)[0] is Outcome.OVERRAN
    assert threads.start(lambda: 1) is None  # every thread held by a hung call
    assert threads.call(lambda: 1, (), {}, LONG) == (Outcome.BUSY, None)
    assert threads.running == 3 and len(hook_threads(threads)) == 3
    release.set()
    assert wait_until(lambda: threads.running == 0)
    assert threads.call(lambda: 2, (), {}, LONG) == (Outcome.DONE, 2)
    assert len(hook_threads(threads)) == 3  # no thread more than the limit, ever
    threads.stop()
    assert wait_until(lambda: not hook_threads(threads))


def test_many_callers_at_once_get_their_own_answers_on_at_most_limit_threads():
    threads, seen, errors = fresh(limit=4), set(), []

    def caller(k: int) -> None:
        for n in range(500):
            call = threads.start(lambda n=n: (k, n, threading.current_thread().ident))
            if call is None:
                continue  # four callers of eight can find every thread busy
            if not call.wait(LONG):
                errors.append(("late", k, n))
                continue
            got_k, got_n, ident = call.result()
            seen.add(ident)
            if (got_k, got_n) != (k, n):
                errors.append((k, n, got_k, got_n))

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert errors == []
    assert 1 <= len(seen) <= 4 and threads.running == 0
    threads.stop()
    assert wait_until(lambda: not hook_threads(threads))


def test_a_thread_idle_for_idle_s_ends_and_the_next_call_starts_one():
    threads = fresh(limit=2, idle_s=0.05)
    assert threads.call(lambda: 1, (), {}, LONG) == (Outcome.DONE, 1)
    assert wait_until(lambda: not hook_threads(threads))  # idle too long: ended
    assert threads.call(lambda: 2, (), {}, LONG) == (Outcome.DONE, 2)
    assert wait_until(lambda: not hook_threads(threads))


def test_a_call_that_raises_leaves_its_thread_serving():
    threads = fresh()
    call = threads.start(lambda: 1 / 0)
    assert call is not None and call.wait(LONG)
    with pytest.raises(ZeroDivisionError):
        call.result()
    assert threads.call(lambda: 3, (), {}, LONG) == (Outcome.DONE, 3)
    assert len(hook_threads(threads)) == 1
    threads.stop()


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        DaemonThreads("x", 0)


def test_a_thread_that_cannot_start_raises_and_gives_its_place_back(monkeypatch):
    threads = fresh()

    def refuse(self):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            threads.start(lambda: 1)
    assert threads.running == 0
    assert threads.call(lambda: 4, (), {}, LONG) == (Outcome.DONE, 4)
    threads.stop()


def test_a_backlog_runs_in_order_on_the_busy_thread_and_stop_waits_for_it():
    threads, order = DaemonThreads("sltrader-test-backlog", 1, backlog=2), []
    gate = threading.Event()
    first = threads.start(gate.wait, LONG)
    queued = [threads.start(order.append, n) for n in range(2)]
    assert first is not None and all(call is not None for call in queued)
    assert threads.start(order.append, 99) is None  # one running, two waiting: full
    assert not threads.stop(timeout=0.05)  # its thread still runs the first call
    gate.set()
    assert threads.stop(timeout=LONG)  # ran the backlog, then ended
    assert order == [0, 1] and all(call.wait(0) for call in queued)
    assert not hook_threads(threads)


def test_a_negative_backlog_is_refused():
    with pytest.raises(ValueError, match="backlog must be at least 0, got -1"):
        DaemonThreads("x", 1, backlog=-1)


def test_stop_says_ended_only_once_every_thread_has_exited(monkeypatch):
    # A thread's last steps after its work (here slowed down) are still its life:
    # stop(timeout) waits for them, so a caller that is told "ended" finds none alive.
    def linger(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "_serve":
            time.sleep(0.2)

    threads, seen = DaemonThreads("sltrader-test-exit", 2), []
    threading.setprofile(linger)
    try:
        calls = [threads.start(lambda: seen.append(threading.current_thread())) for _ in range(2)]
    finally:
        threading.setprofile(None)
    assert all(call is not None and call.wait(LONG) for call in calls)
    assert threads.stop(timeout=LONG)
    assert len(seen) == 2 and not any(thread.is_alive() for thread in seen)


def test_stop_without_waiting_says_whether_the_threads_have_exited():
    threads, gate = DaemonThreads("sltrader-test-exit", 1), threading.Event()
    call = threads.start(gate.wait, LONG)
    assert call is not None
    assert not threads.stop()  # its call still runs
    gate.set()
    assert call.wait(LONG) and threads.stop(timeout=LONG) and threads.stop()


def test_an_ended_call_says_so_to_every_wait_from_every_thread():
    threads, gate = DaemonThreads("sltrader-test-waits", 1), threading.Event()
    call = threads.start(gate.wait, LONG)
    assert call is not None and not call.wait(0)
    with ThreadPoolExecutor(4) as pool:
        waits = [pool.submit(call.wait, LONG) for _ in range(4)]
        gate.set()
        assert all(wait.result() for wait in waits)
    assert call.wait(0) and call.wait(LONG) and call.result() is True
    threads.stop(timeout=LONG)


def test_wait_0_on_an_ended_call_is_true_in_every_thread_every_time():
    threads = DaemonThreads("sltrader-test-waits", 1)
    call = threads.start(lambda: None)
    assert call is not None and call.wait(LONG)
    together = threading.Barrier(2)

    def spin(_: int) -> int:
        together.wait(LONG)
        return sum(not call.wait(0) for _ in range(100_000))

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(spin, range(2))) == [0, 0]  # no False, in either thread
    threads.stop(timeout=LONG)


def test_a_start_that_fails_leaves_no_call_stranded_behind_it(monkeypatch):
    # While one caller's thread fails to start, another's call must not queue behind a
    # thread that will never exist: it waits for the outcome, then gets a thread of its own.
    threads, ran = DaemonThreads("sltrader-test-fail", 1, backlog=1), []
    entered, proceed = threading.Event(), threading.Event()
    start = threading.Thread.start

    def fail_once(self):
        if self.name == "sltrader-test-fail" and not proceed.is_set():
            entered.set()
            proceed.wait(LONG)
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", fail_once)
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(threads.start, ran.append, "a")
        assert entered.wait(LONG)
        second = pool.submit(threads.start, ran.append, "b")
        time.sleep(0.05)  # the second caller is inside start() by now
        proceed.set()
        with pytest.raises(RuntimeError, match="can't start new thread"):
            failing.result()
        call = second.result()
    assert call is not None and call.wait(LONG) and ran == ["b"]
    assert threads.stop(timeout=LONG) and threads.running == 0


def test_stop_from_one_of_its_own_threads_does_not_raise_and_says_not_ended():
    threads = DaemonThreads("sltrader-test-own", 1)
    assert threads.call(lambda: threads.stop(timeout=0.05), (), {}, LONG) == (Outcome.DONE, False)
    assert threads.stop(timeout=LONG)


def test_an_infinite_wait_or_stop_is_accepted():
    threads = DaemonThreads("sltrader-test-inf", 1)
    call = threads.start(lambda: 5)
    assert call is not None and call.wait(math.inf) and call.result() == 5
    assert threads.stop(timeout=math.inf)


@pytest.mark.parametrize("idle_s", [0.0, -2.0, math.nan])
def test_an_idle_time_a_thread_cannot_wait_is_refused(idle_s):
    with pytest.raises(ValueError, match="idle_s must be above 0"):
        DaemonThreads("x", 1, idle_s)
