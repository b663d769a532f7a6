from __future__ import annotations

import numpy as np
import pytest

from sltrader_plugins.host.model import CheapModel, OnlineModel, make_model


def learnable(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28))
    y = (x[:, 0] - 0.5 * x[:, 3] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


@pytest.mark.parametrize("kind", ["sgd", "cheap"])
def test_learns_a_learnable_regime(kind):
    model = make_model(kind, seed=1)
    x, y = learnable(0)
    assert model.predict(x[0]) == 0.5  # no opinion before learning
    assert model.predict_batch(list(x[:3])) == [0.5] * 3
    for i in range(0, 2000, 100):
        model.learn(x[i : i + 100], y[i : i + 100])
    p = np.array(model.predict_batch(list(x[2000:])))
    accuracy = ((p > 0.5) == y[2000:]).mean()
    assert accuracy > 0.7  # chance is 0.5
    assert model.samples_seen == 2000


@pytest.mark.parametrize("kind", ["sgd", "cheap"])
def test_single_and_batch_agree(kind):
    model = make_model(kind, seed=2)
    x, y = learnable(1, 500)
    model.learn(x, y)
    batch = model.predict_batch(list(x[:64]))
    single = [model.predict(row) for row in x[:64]]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-9)
    assert all(isinstance(p, float) for p in single)


def test_sgd_and_cheap_agree():
    x, y = learnable(2, 500)
    a, b = OnlineModel(3), CheapModel(3)
    a.learn(x, y)
    b.learn(x, y)
    np.testing.assert_allclose(a.predict_batch(list(x[:20])), b.predict_batch(list(x[:20])))


def test_learn_with_nothing_is_a_no_op():
    model = OnlineModel()
    model.learn(np.empty((0, 28)), np.empty(0))
    assert model.samples_seen == 0


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        make_model("lgbm", 0)
