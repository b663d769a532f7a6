"""``sltrader exchange``, ``sltrader run --exchange`` and ``sltrader bench --traders``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest

from sltrader_plugins import cli
from sltrader_plugins.bench.traders import config_toml, format_traders_table
from sltrader_plugins.host.exchange import SimClock
from sltrader_plugins.host.workload import CLOCK_START, workload_from
from sltrader_plugins.manager import installed_entry_points
from sltrader_plugins.served import HttpExchange, LatencyProfile, RateLimit, ServedMarket
from sltrader_plugins.served import start_server as serve
from tests.host.conftest import default_sigint

CYCLES = "16"  # the first decisions come after a few candles
BENCH_CYCLES = "24"  # enough for traders 0 and 1 to decide differently


def _exchange(*options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "sltrader_plugins.cli", "exchange", "--port", "0"]
    return subprocess.Popen(
        [*command, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )


def test_exchange_prints_its_url_first_and_stops_on_ctrl_c(tmp_path):
    process = _exchange("--size", "small", "--cycles", CYCLES, "--rate-limit", "100/1m")
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = HttpExchange(url, SimClock(0))
        info = client.market_info()
        assert info["symbols"][:2] == ["BTC_USDT", "ETH/USDT"]
        assert client.stats()["rate_limit"] == 100
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "Traceback" not in err and out == ""
    assert "rate limit 100/60s" in err


def test_exchange_bad_options_are_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["exchange", "--rate-limit", "fast"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "expected REQUESTS/WINDOW" in err[-1]
    assert cli.main(["exchange", "--port", "1", "--host", "203.0.113.1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_run_on_a_served_exchange_decides_as_on_the_embedded_one(tmp_path, capsys):
    workload = workload_from("small", cycles=int(CYCLES))
    market = ServedMarket(workload.market(), workload.symbol_names(), LatencyProfile(), RateLimit())
    server, thread = serve(market)
    try:
        options = ["--size", "small", "--cycles", CYCLES, "--plugins", "", "--quiet"]
        assert cli.main(["run", *options, "--json", str(tmp_path / "a.json")]) == 0
        served = ["--exchange", server.url, "--json", str(tmp_path / "b.json")]
        assert cli.main(["run", *options, *served]) == 0
        a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
        assert a["decisions_digest"] == b["decisions_digest"]
        assert a["exchange_requests"] == b["exchange_requests"]
        # another market (more cycles): refused in one line
        capsys.readouterr()
        bad = ["run", "--size", "small", "--cycles", "9", "--plugins", "", "--quiet"]
        assert cli.main([*bad, "--exchange", server.url]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "serves another market" in err
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert workload.market().start == CLOCK_START


def test_bench_traders_json_shape(tmp_path, capsys):
    """Two traders: solo, none and (when the plugin is installed) shared."""
    shared = "shared" in {ep.name for ep in installed_entry_points()}
    if shared and shutil.which("redis-server") is None:
        pytest.skip("sltrader-shared is installed but redis-server is not")
    sets = "none,shared" if shared else "none"
    out = tmp_path / "traders.json"
    options = ["--traders", "2", "--size", "small", "--cycles", BENCH_CYCLES, "--sets", sets]
    # No limit: waiting out a rate limit (Retry-After) would make this test slow; the
    # limit's effect is measured by the bench itself (docs/workload.md).
    options += ["--rate-limit", "off", "--speed", "1000"]
    code = cli.main(["bench", *options, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["traders"] == 2 and len(result["solo_digests"]) == 2
    assert result["solo_digests"][0] != result["solo_digests"][1]  # traders differ
    assert set(result["sets"]) == set(sets.split(","))
    for row in result["sets"].values():
        for key in ("exchange_requests", "rate_limited", "digests", "scan_wall_s"):
            assert key in row
        assert 0.0 <= row["cache_hit_rate"] <= 1.0 and len(row["digests"]) == 2
        assert row["rate_limited"] == 0 and row["digests"] == result["solo_digests"]
    limit = result["rate_limit"]
    assert limit["requests"] == 0 and len(limit["solo_peak_window_requests"]) == 2
    if shared:
        none, shared_set = result["sets"]["none"], result["sets"]["shared"]
        # Started together (a barrier), the two share most closes: well under x0.75.
        assert shared_set["exchange_requests"] < 0.75 * none["exchange_requests"]
    else:
        print("sltrader-shared is not installed: the shared set was not run")
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("sltrader bench: 2 traders at once")
    assert "= solo" in table and format_traders_table(result) in table


def test_bench_traders_refuses_a_set_it_cannot_run(capsys):
    code = cli.main(["bench", "--traders", "2", "--size", "small", "--sets", "none,nosuch"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch" in err and "--sets none" in err
    assert cli.main(["bench", "--traders", "2", "--plot", "x.png"]) == 2
    capsys.readouterr()
    for bad in (["--speed", "0"], ["--rate-limit", "lots"]):
        with pytest.raises(SystemExit):
            cli.main(["bench", "--traders", "2", *bad])
        assert "error: argument" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("option", [["--speed", "2"], ["--rate-limit", "100/1m"]])
def test_traders_options_without_traders_are_one_line(capsys, option):
    assert cli.main(["bench", "--size", "small", *option]) == 2
    err = capsys.readouterr().err
    assert err == f"sltrader: error: {option[0]} applies with --traders only\n"


def test_config_toml_round_trips(tmp_path):
    from sltrader_plugins.config import Config, load_config

    config = Config.from_mapping(
        {
            "enable": ["shared"],
            "host": {"seed": 3, "latency": "wan", "confirm_timeframes": ["5m", "15m"]},
            "plugins": {"shared": {"url": "redis://x:1/0", "enabled": True, "burst": 4}},
        }
    )
    path = tmp_path / "sltrader.toml"
    path.write_text(config_toml(config, {"shared": {"requests_per_minute": 12.5}}))
    again = load_config(path)
    assert again.host == config.host and again.enable == ("shared",)
    assert again.plugin("shared") == {**config.plugin("shared"), "requests_per_minute": 12.5}
