"""Make ``batching_support`` importable: tests run with ``--import-mode=importlib``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batching_support import LinearModel


@pytest.fixture
def model() -> LinearModel:
    return LinearModel()
