"""A model fitted on a pandas DataFrame, as a pandas trader fits it, through ModelAdapter.

Here because this environment has pandas (the example's data package brings it); the
core never imports pandas unless such a model is given to it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sltrader_plugins import ModelAdapter

pandas = pytest.importorskip("pandas")

NAMES = ["ret_1", "ret_5", "rsi_14", "atr_14"]


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    rng = np.random.default_rng(3)
    x = pandas.DataFrame(rng.normal(size=(400, len(NAMES))), columns=NAMES)
    y = (x["ret_1"] + 0.5 * x["rsi_14"] > 0).astype(int)
    return LogisticRegression().fit(x, y)


def test_a_dataframe_fitted_model_predicts_rows_without_a_warning_per_call(fitted):
    adapter = ModelAdapter(fitted)
    rows = [np.array([0.1, -0.2, 0.3, 0.05]), np.array([-1.0, 0.0, -0.5, 0.2])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "X does not have valid feature names" would raise
        one = adapter.predict(rows[0])
        many = adapter.predict_batch(rows)
    frame = pandas.DataFrame(np.vstack(rows), columns=NAMES)
    expected = fitted.predict_proba(frame)[:, 1]
    assert one == pytest.approx(expected[0], abs=1e-12)
    assert many == pytest.approx(expected.tolist(), abs=1e-12)
    assert adapter.prediction_range == (0.0, 1.0)
    assert adapter.times().predictions == 3


def test_the_same_model_fitted_on_arrays_gets_arrays(fitted):
    plain = LogisticRegression().fit(np.asarray(fitted.coef_.repeat(4, 0)), [0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0.0 <= ModelAdapter(plain).predict(np.zeros(len(NAMES))) <= 1.0
