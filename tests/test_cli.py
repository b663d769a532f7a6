"""``sltrader plugins`` and ``sltrader --version`` against fake installed distributions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sltrader_plugins.cli import main
from sltrader_plugins.manager import ENV_PLUGINS

PLUGIN = """
from sltrader_plugins import hookimpl

class Plugin:
    @hookimpl
    def on_signal(self, signal):
        pass

    @hookimpl
    def on_scan_complete(self, symbols):
        pass
"""


def plugins_json(capsys, *args: str) -> dict[str, dict]:
    assert main(["plugins", "--json", *args]) == 0
    return {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}


def test_plugins_json_shows_each_plugin_with_its_state(fake_dist, capsys, monkeypatch):
    monkeypatch.delenv(ENV_PLUGINS, raising=False)
    fake_dist("alpha", PLUGIN, version="2.5")
    fake_dist("broken", "raise ImportError('no libfoo')")
    plugins = plugins_json(capsys)
    assert plugins["alpha"] == {
        "name": "alpha",
        "distribution": "fake-alpha",
        "version": "2.5",
        "hooks": ["on_scan_complete", "on_signal"],
        "active": True,
        "reason": None,
    }
    assert plugins["broken"]["active"] is False
    assert plugins["broken"]["reason"] == "failed to import: ImportError: no libfoo"


def test_the_environment_chooses_and_the_cli_overrides(fake_dist, capsys, monkeypatch):
    fake_dist("alpha", PLUGIN)
    fake_dist("beta", PLUGIN)
    monkeypatch.setenv(ENV_PLUGINS, "beta")
    plugins = plugins_json(capsys)
    assert [name for name, p in plugins.items() if p["active"]] == ["beta"]
    assert plugins["alpha"]["reason"] == "not in the enable list (from environment)"
    plugins = plugins_json(capsys, "--plugins", "alpha")
    assert [name for name, p in plugins.items() if p["active"]] == ["alpha"]


def test_config_file_and_strict_option(fake_dist, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_PLUGINS, raising=False)
    fake_dist("alpha", PLUGIN)
    fake_dist("broken", "raise ImportError('no libfoo')")
    config = tmp_path / "sltrader.toml"
    config.write_text("[plugins.alpha]\nenabled = false\n")
    plugins = plugins_json(capsys, "--config", str(config), "--plugins", "alpha,broken")
    assert plugins["alpha"]["active"] is True  # the run's choice overrides the file
    assert main(["plugins", "--config", str(config)]) == 0
    assert "alpha (fake-alpha 1.0): inactive: disabled by config" in capsys.readouterr().out
    assert main(["plugins", "--strict", "--plugins", "broken"]) == 2
    assert "plugin 'broken' (fake-broken): failed to import" in capsys.readouterr().err


def test_text_listing(fake_dist, capsys):
    fake_dist("alpha", PLUGIN)
    assert main(["plugins", "--plugins", "alpha"]) == 0
    out = capsys.readouterr().out
    assert "alpha (fake-alpha 1.0): active\n    hooks: on_scan_complete, on_signal" in out


def test_unknown_plugin_is_an_error_naming_the_installed(fake_dist, capsys, monkeypatch):
    fake_dist("alpha", PLUGIN)
    monkeypatch.setenv(ENV_PLUGINS, "nosuch")
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "unknown plugin(s) nosuch" in err and "alpha" in err


def test_bad_config_is_an_error_naming_the_key(capsys, tmp_path):
    config = tmp_path / "sltrader.toml"
    config.write_text("strict = 1\n")
    assert main(["plugins", "--config", str(config)]) == 2
    assert "'strict': expected true or false, got 1" in capsys.readouterr().err


def test_version_lists_plugins(fake_dist, capsys):
    fake_dist("alpha", PLUGIN, version="3.1")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("sltrader 0.1.0\nplugins: ") and "alpha-3.1" in out


def test_console_script_runs_in_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-m", "sltrader_plugins.cli", "plugins", "--json", "--plugins", ""],
        capture_output=True,
        text=True,
        check=True,
    )
    plugins = json.loads(result.stdout)["plugins"]
    assert all(not p["active"] for p in plugins)


JOBS = ("host", "bench", "output", "served", "cli.commands")


@pytest.mark.parametrize(
    "argv", [["plugins"], ["-v", "plugins", "--json"], ["--version"]], ids=" ".join
)
def test_the_plugin_commands_import_nothing_of_the_trader_the_bench_or_the_exchange(argv):
    code = (
        "import sys\n"
        "from sltrader_plugins.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"  # --version exits
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('sltrader_plugins.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    modules = done.stdout.strip().splitlines()[-1]
    assert "sltrader_plugins.callsites" in modules or "sltrader_plugins.manager" in modules
    for job in JOBS:
        assert f"'sltrader_plugins.{job}" not in modules, (job, modules)


def test_the_other_commands_are_there_when_asked_for(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert all(command in shown for command in ("plugins", "run", "bench", "report", "exchange"))
