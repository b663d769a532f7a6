"""The real install round trip: the distributions installed are exactly the plugins active.

Each tox environment installs the core with a different set of plugin distributions and
says which in ``SLTRADER_EXPECT_PLUGINS``; this checks the installed console script agrees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

EXPECTED = os.environ.get("SLTRADER_EXPECT_PLUGINS")

pytestmark = pytest.mark.skipif(
    EXPECTED is None, reason="set by the tox environments that install a known plugin set"
)


def active_plugins(**env: str) -> list[str]:
    executable = shutil.which("sltrader")
    assert executable, "the sltrader console script is not installed"
    environ = {k: v for k, v in os.environ.items() if k != "SLTRADER_PLUGINS"} | env
    result = subprocess.run(
        [executable, "plugins", "--json"], capture_output=True, text=True, env=environ, check=True
    )
    return [p["name"] for p in json.loads(result.stdout)["plugins"] if p["active"]]


def test_exactly_the_installed_plugins_are_active():
    assert active_plugins() == sorted(filter(None, (EXPECTED or "").split(",")))


def test_the_environment_picks_one_installed_plugin():
    for name in filter(None, (EXPECTED or "").split(",")):
        assert active_plugins(SLTRADER_PLUGINS=name) == [name]
