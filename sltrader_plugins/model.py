"""``ModelAdapter``: any estimator as a timed :class:`~sltrader_plugins.BatchModel`.

A trader hands plugins the model as it calls it. The adapter gives a scikit-learn style
estimator (``predict_proba``, or ``predict``; LightGBM and XGBoost's scikit-learn classes
qualify) the ``predict(features)``/``predict_batch(rows)`` pair of the contract, and
measures the time spent inside the model, so a batching plugin's saving shows in the
trader's own numbers. Nothing here imports a model library.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
import numpy as np


def real_number(value: Any) -> float:
    """``value`` as a float, if it is a real number: a Python or numpy int or float.

    Not a bool (a model answering ``True`` is broken, not certain) and not a string.

    :raises TypeError: for anything else.
    """
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}")


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite :func:`real_number`, else ``None``.

    The rule for a prediction a plugin or a batch answers, and for a plugin's metric.
    """
    try:
        number = real_number(value)
    except (TypeError, OverflowError):  # OverflowError: a Python int beyond float range
        return None
    return number if math.isfinite(number) else None


@attrs.frozen
class ModelTimes:
    """What a :class:`ModelAdapter` has measured so far."""

    seconds: float = 0.0  #: inside the model, over all calls
    predictions: int = 0
    predict_calls: int = 0  #: one-row calls
    batch_calls: int = 0  #: ``predict_batch`` calls

    @property
    def seconds_per_prediction(self) -> float:
        """Model seconds per prediction (0.0 before the first)."""
        return self.seconds / self.predictions if self.predictions else 0.0


class ModelAdapter:
    """``predict`` and ``predict_batch`` over ``estimator``, timed; thread-safe.

    How the estimator is called, in this order of preference:

    - it has ``predict_batch`` (a :class:`~sltrader_plugins.BatchModel`): its own
      ``predict`` and ``predict_batch``;
    - it has ``predict_proba``: column ``proba_column`` (the probability of the second
      class of a binary classifier) of ``predict_proba`` over the stacked rows;
    - it has ``predict``: its ``predict`` over the stacked rows (a regressor).

    In the last two cases ``predict(f)`` is ``predict_batch([f])[0]``, so both agree.

    An estimator fitted on a pandas DataFrame (it has ``feature_names_in_``, as
    scikit-learn's and LightGBM's do) warns "X does not have valid feature names" on
    every call with plain rows. ``feature_names`` says what to do about it: ``"silence"``
    (the default) passes the rows as they are, in the order of the names it was fitted
    with, and ignores exactly that warning, process-wide, from scikit-learn; ``"frame"``
    passes a DataFrame with those names, which scikit-learn then checks, at several times
    the cost of a call (pandas imported only then).
    ``prediction_range`` is ``(0.0, 1.0)`` over ``predict_proba``, the estimator's own
    ``prediction_range`` if it declares one, else ``None`` (no range is known).
    What it times: the wall-clock time (``time.perf_counter``) of each call, from the
    rows as given to the answers as floats: stacking the rows (and building the
    DataFrame) included, the wait for a lock the estimator takes included; CPU time is not
    measured. The counters are guarded by a lock; the estimator is called outside it and
    must be safe to call from many threads at once, as scikit-learn's fitted estimators
    are.

    :raises TypeError: the estimator has none of those methods.
    """

    def __init__(
        self,
        estimator: Any,
        proba_column: int = 1,
        feature_names: Literal["silence", "frame"] = "silence",
    ) -> None:
        self.estimator = estimator
        self._lock = threading.Lock()
        # Plain counters under the lock; ModelTimes is made on demand. A batching plugin
        # times predict_batch calls, so every line here counts as the model's cost.
        self._seconds = 0.0
        self._predictions = 0
        self._predict_calls = 0
        self._batch_calls = 0
        self._one: Callable[[np.ndarray], float]
        self._many: Callable[[Sequence[np.ndarray]], Sequence[float]]
        self.prediction_range: tuple[float, float] | None = _declared_range(estimator)
        if callable(getattr(estimator, "predict_batch", None)):
            self._one, self._many = estimator.predict, estimator.predict_batch
        elif callable(getattr(estimator, "predict_proba", None)):
            self.prediction_range = self.prediction_range or (0.0, 1.0)
            proba, table = estimator.predict_proba, _table_for(estimator, feature_names)
            self._many = lambda rows: proba(table(rows))[:, proba_column]
            self._one = lambda features: self._many([features])[0]
        elif callable(getattr(estimator, "predict", None)):
            predict, table = estimator.predict, _table_for(estimator, feature_names)
            self._many = lambda rows: np.ravel(predict(table(rows)))
            self._one = lambda features: self._many([features])[0]
        else:
            raise TypeError(
                f"{type(estimator).__name__} has no predict_batch, predict_proba or predict"
            )

    def predict(self, features: np.ndarray) -> float:
        """The estimator's answer for one row (its ``proba_column``), timed in wall time."""
        start = time.perf_counter()
        result = self._one(features)
        elapsed = time.perf_counter() - start
        with self._lock:
            self._seconds += elapsed
            self._predictions += 1
            self._predict_calls += 1
        return real_number(result)

    def predict_batch(self, features: Sequence[np.ndarray]) -> list[float]:
        """One answer per row, in order, from one estimator call, timed in wall time."""
        start = time.perf_counter()
        answers = self._many(features)
        # No Python loop over the rows: the adapter's own cost stays out of model time.
        result = answers.tolist() if isinstance(answers, np.ndarray) else list(answers)
        elapsed = time.perf_counter() - start
        with self._lock:
            self._seconds += elapsed
            self._predictions += len(features)
            self._batch_calls += 1
        return result

    def times(self) -> ModelTimes:
        """A snapshot of the counters."""
        with self._lock:
            return ModelTimes(
                self._seconds, self._predictions, self._predict_calls, self._batch_calls
            )


def _declared_range(estimator: Any) -> tuple[float, float] | None:
    """The estimator's ``prediction_range``, if it declares a valid one.

    :raises ValueError: it declares one that is not two finite numbers, low <= high.
    """
    declared = getattr(estimator, "prediction_range", None)
    if declared is None:
        return None
    try:
        low, high = (finite_number(v) for v in declared)
    except (TypeError, ValueError):
        low = high = None
    if low is None or high is None or low > high:
        raise ValueError(f"prediction_range must be (low, high), finite, got {declared!r}")
    return low, high


def _table_for(estimator: Any, feature_names: str) -> Callable[[Sequence[np.ndarray]], Any]:
    """How rows reach ``estimator``: stacked; for a model fitted with feature names, with
    that warning silenced, or as a DataFrame of those names."""
    if feature_names not in ("silence", "frame"):
        raise ValueError(f"feature_names must be 'silence' or 'frame', got {feature_names!r}")
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return _stack
    if feature_names == "silence":
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", module="sklearn"
        )
        return _stack
    import pandas  # only for a model fitted on a DataFrame, which needed pandas itself

    columns = pandas.Index(names)
    return lambda rows: pandas.DataFrame(_stack(rows), columns=columns, copy=False)


def _stack(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
