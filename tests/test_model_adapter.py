"""The public model adapter: any estimator as a timed predict/predict_batch pair."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from sltrader_plugins import BatchModel, ModelAdapter


def data(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] - x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(int)
    return x, y


def fitted(kind: str):
    x, y = data()
    if kind == "proba":
        return LogisticRegression().fit(x, y)
    return LinearRegression().fit(x, y.astype(float))


@pytest.mark.parametrize("kind", ["proba", "predict"])
def test_predict_and_predict_batch_agree_with_the_estimator(kind):
    estimator = fitted(kind)
    model = ModelAdapter(estimator)
    assert isinstance(model, BatchModel)
    rows = list(data(1, 50)[0])
    batch = model.predict_batch(rows)
    expected = (
        estimator.predict_proba(np.array(rows))[:, 1]
        if kind == "proba"
        else estimator.predict(np.array(rows))
    )
    assert len(batch) == 50 and all(type(p) is float for p in batch)
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-12)
    singles = [model.predict(row) for row in rows]
    np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-9)


class OwnBatchModel:
    """A trader's own model that already speaks the contract."""

    def predict(self, features):
        return float(features.sum())

    def predict_batch(self, rows):
        return [float(r.sum()) for r in rows]


def test_a_batch_model_is_called_as_it_is():
    model = ModelAdapter(OwnBatchModel())
    assert model.predict(np.ones(3)) == 3.0
    assert model.predict_batch([np.ones(2), np.zeros(2)]) == [2.0, 0.0]
    times = model.times()
    assert (times.predictions, times.predict_calls, times.batch_calls) == (3, 1, 1)


def test_an_object_without_predict_is_refused():
    with pytest.raises(TypeError, match="object has no predict_batch, predict_proba or predict"):
        ModelAdapter(object())


def test_counts_from_many_threads():
    model = ModelAdapter(fitted("proba"))
    rows = list(data(2, 20)[0])

    def work():
        for _ in range(25):
            for row in rows[:4]:
                model.predict(row)
            model.predict_batch(rows)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = model.times()
    assert times.predict_calls == 16 * 25 * 4
    assert times.batch_calls == 16 * 25
    assert times.predictions == 16 * 25 * (4 + 20)
    assert times.seconds > 0 and times.seconds_per_prediction == times.seconds / times.predictions
