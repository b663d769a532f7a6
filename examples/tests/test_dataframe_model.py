"""A model fitted on a pandas DataFrame, as a pandas trader fits it, through ModelAdapter.

Here because this environment has pandas (the example's data package brings it); the
core never imports pandas unless it is asked to pass DataFrames.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sltrader_plugins import ModelAdapter

pandas = pytest.importorskip("pandas")

NAMES = ["ret_1", "ret_5", "rsi_14", "atr_14"]
ROWS = [np.array([0.1, -0.2, 0.3, 0.05]), np.array([-1.0, 0.0, -0.5, 0.2])]


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    rng = np.random.default_rng(3)
    x = pandas.DataFrame(rng.normal(size=(400, len(NAMES))), columns=NAMES)
    y = (x["ret_1"] + 0.5 * x["rsi_14"] > 0).astype(int)
    return LogisticRegression().fit(x, y)


def expected(fitted: LogisticRegression) -> list[float]:
    frame = pandas.DataFrame(np.vstack(ROWS), columns=NAMES)
    return fitted.predict_proba(frame)[:, 1].tolist()


def answers(fitted: LogisticRegression, mode: str) -> tuple[ModelAdapter, list, list[str]]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", UserWarning)  # every warning, once per call...
        adapter = ModelAdapter(fitted, feature_names=mode)  # ...but what the adapter ignores
        one = adapter.predict(ROWS[0])
        many = adapter.predict_batch(ROWS)
    return adapter, [one, *many], [str(w.message) for w in seen]


@pytest.mark.parametrize("mode", ["silence", "frame"])
def test_a_dataframe_fitted_model_predicts_rows_without_a_warning_per_call(fitted, mode):
    adapter, got, messages = answers(fitted, mode)
    want = expected(fitted)
    assert got == pytest.approx([want[0], *want], abs=1e-12)
    assert not [m for m in messages if "feature names" in m]
    assert adapter.prediction_range == (0.0, 1.0) and adapter.times().predictions == 3


def test_without_the_adapter_the_warning_is_there(fitted):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", UserWarning)
        fitted.predict_proba(np.vstack(ROWS))
    assert any("feature names" in str(w.message) for w in seen)


def test_an_unknown_mode_is_refused(fitted):
    with pytest.raises(ValueError, match="feature_names"):
        ModelAdapter(fitted, feature_names="drop")  # type: ignore[arg-type]
