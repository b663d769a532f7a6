"""Make ``batching_support`` importable: tests run with ``--import-mode=importlib``.

Who runs a batch with company depends on the workers and the CPUs (see the batcher's
module docs): every test sees one CPU, so the batch's leader runs it whatever machine the
tests run on, unless it asks for ``runner``, which runs it both ways.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batching_support import LinearModel

from sltrader_batching import batcher

#: The CPUs a batcher is told it has, by who then runs a batch of 2 to 32 workers.
RUNNERS = {"leader": 1, "model-thread": 64}


@pytest.fixture(autouse=True)
def _one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batcher, "_usable_cpus", lambda: 1)


@pytest.fixture(params=list(RUNNERS), ids=list(RUNNERS))
def runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Who runs a batch with company: ``leader`` or ``model-thread``."""
    cpus = RUNNERS[request.param]
    monkeypatch.setattr(batcher, "_usable_cpus", lambda: cpus)
    return str(request.param)


@pytest.fixture
def model() -> LinearModel:
    return LinearModel()
