"""Fixtures for the core's tests: fake installed distributions on a temporary path."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sltrader_plugins.manager import ENTRY_POINT_GROUP, installed_entry_points

FakeDist = Callable[..., None]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary site directory on ``sys.path``; modules written there are forgotten after."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        if name.startswith("fake_"):
            del sys.modules[name]


@pytest.fixture
def fake_dist(site: Path) -> FakeDist:
    """Install a fake distribution (dist-info with an ``sltrader`` entry point) in ``site``.

    ``fake_dist("alpha", source)`` writes module ``fake_alpha`` with ``source`` and a
    distribution ``fake-alpha`` 1.0 whose entry point ``alpha`` names ``fake_alpha:Plugin``.
    """

    def install(name: str, source: str, target: str = "Plugin", version: str = "1.0") -> None:
        module = f"fake_{name}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"fake_{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fake-{name}\nVersion: {version}\n"
        )
        (info / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\n{name} = {module}:{target}\n"
        )
        importlib.invalidate_caches()

    return install


@pytest.fixture
def fake_entry_points(site: Path) -> Callable[[], list]:
    """The entry points discovered from ``site`` only (other installed plugins ignored)."""

    def discover() -> list:
        return [
            ep
            for ep in installed_entry_points()
            if ep.dist is not None and Path(str(ep.dist.locate_file(""))) == site
        ]

    return discover
