"""bench/load_time.py: a fresh process's ``Plugins.load()``, what it imported, rendered."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sltrader_plugins.manager import installed_entry_points

spec = importlib.util.spec_from_file_location("load_time", Path(__file__).with_name("load_time.py"))
assert spec is not None and spec.loader is not None
load_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(load_time)


def test_one_load_imports_the_plugins_and_neither_redis_nor_the_host() -> None:
    run = load_time.measure_once()
    assert run["active"] == sorted(ep.name for ep in installed_entry_points())
    assert 0 < run["wall_s"] < 10 and run["import_us"] > 0
    for name in run["active"]:
        assert any(m.startswith(f"sltrader_{name}") for m in run["modules"]), name
    assert load_time.forbidden(run["modules"]) == []


def test_forbidden_names_redis_and_the_jobs_around_the_contract_and_nothing_else() -> None:
    jobs = [
        "sltrader_plugins.host.loop",
        "sltrader_plugins.bench.reference",
        "sltrader_plugins.cli",
        "sltrader_plugins.output.plot",
        "sltrader_plugins.served",
    ]
    allowed = ["redisx", "sltrader_plugins.callsites", "sltrader_plugins.benchmarks", "numpy"]
    assert load_time.forbidden(["redis", "redis.client", *allowed, *jobs]) == [
        "redis",
        "redis.client",
        *jobs,
    ]


def test_a_saved_run_renders_the_same_text(tmp_path, capsys) -> None:
    result = load_time.run(1, ["python", "bench/load_time.py", "--repeats", "1"])
    saved = tmp_path / "load.json"
    saved.write_text(json.dumps(result))
    assert load_time.main(["--markdown", str(saved)]) == 0
    text = capsys.readouterr().out
    assert text == load_time.format_markdown(result)
    assert text.startswith("`Plugins.load()` with ") and f"{result['load_ms']:.1f} ms" in text
