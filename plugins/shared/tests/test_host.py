"""Two reference traders sharing one Redis server, which is killed mid-run: no decision
changes (the issue's "Redis killed mid-run costs no decision")."""

from __future__ import annotations

import threading

import attrs
import pytest

from sltrader_plugins import Config
from sltrader_plugins.host.figures import RunReport
from sltrader_plugins.host.loop import Host
from sltrader_plugins.host.workload import SIZES
from sltrader_plugins.manager import PluginManager
from sltrader_shared.plugin import SharedPlugin

pytest.importorskip("sklearn")  # the reference trader's model

CYCLES = 16
KILLED_AFTER = 6  # cycles


def sharing_manager(url: str, namespace: str) -> PluginManager:
    manager = PluginManager()
    # share_alone: the traders start in their own time, and the one that scans first must
    # publish for the other (a trader alone steps aside: test_step_aside.py).
    section = {"url": url, "namespace": namespace, "timeout_ms": 200, "retry_s": 0.2}
    section["share_alone"] = True
    manager.config = Config.from_mapping({"plugins": {"shared": section}})
    manager.register(SharedPlugin(), "shared")
    return manager


def test_redis_killed_mid_run_costs_no_decision(redis_server, namespace):
    workload = attrs.evolve(SIZES["small"], cycles=CYCLES)
    alone = Host(workload, PluginManager()).run()
    # Two traders scan in step (as on one real clock), so one is served what the other
    # fetched for the same close; Redis dies after a few cycles, and they go on alone.
    in_step = threading.Barrier(2, timeout=60)
    reports: dict[int, RunReport] = {}
    errors: list[BaseException] = []

    def step(done: int, total: int, scan_s: float) -> None:
        in_step.wait()
        if done == KILLED_AFTER:
            if threading.current_thread().name == "trader-0":
                redis_server.stop()
            in_step.wait()

    def trade(i: int) -> None:
        try:
            reports[i] = Host(workload, sharing_manager(redis_server.url, namespace)).run(
                progress=step
            )
        except BaseException as exc:  # reported by the test thread
            in_step.abort()
            errors.append(exc)

    traders = [threading.Thread(target=trade, args=(i,), name=f"trader-{i}") for i in (0, 1)]
    for trader in traders:
        trader.start()
    for trader in traders:
        trader.join(120)
    assert not errors, errors
    for report in reports.values():
        assert report.cycles == CYCLES
        assert report.decisions_digest == alone.decisions_digest
        assert report.plugin_faults == {}
        assert report.plugin_metrics["shared.outages"] >= 1
    served = sum(r.plugin_metrics["shared.served"] for r in reports.values())
    assert served > 0  # they did share before Redis went away
