"""Features are bit-identical with and without the pool.

The pool only changes where intermediate memory comes from, so every feature must be
the same float, bit for bit, whether a build gets fresh arrays or reused (and poisoned)
ones, and whatever ran in the buffers before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sltrader_pooling import BufferPool, PoolingConfig

Build = Callable[..., np.ndarray]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("poison", [False, True])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(61, 1500))
def test_random_series_stand_in_engine(
    build: Build, series: Callable[..., Any], plain: type, poison: bool, seed: int, n: int
) -> None:
    pool = BufferPool(PoolingConfig(poison=poison), max_idle_builds=1)
    close, high, low = series(seed, n)
    expected = build(close, high, low, plain())
    # Dirty the pool with another series first: reused buffers hold its values.
    other = series(seed + 1, n)
    build(*other, pool.acquire())
    for _ in range(2):
        assert same_bits(build(close, high, low, pool.acquire()), expected)
