"""The self-learning model: scikit-learn incremental learners, trained between scans.

``OnlineModel`` scales features with ``StandardScaler.partial_fit`` and classifies "up
next candle" with ``SGDClassifier(loss="log_loss").partial_fit``. Training happens on
the main loop between scans; predictions read an immutable snapshot published by
reference after each update, so worker threads never see a half-trained model and need
no lock. ``CheapModel`` learns the same way but predicts with one numpy dot product, a
few microseconds per call, the regime where batching has least to gain.

The host hands hooks the learner inside :class:`sltrader_plugins.ModelAdapter`, which
measures the time spent in ``predict``/``predict_batch``.

scikit-learn is imported here only, when the host builds its model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

_CLASSES = np.array([0, 1])


class OnlineModel:
    """Probability that the next candle closes up, learned online.

    Until the first update every prediction is 0.5 (no opinion).
    """

    #: A probability: a plugin's prediction outside it is the plugin's fault.
    prediction_range = (0.0, 1.0)

    def __init__(self, seed: int = 0, alpha: float = 0.1) -> None:
        self._scaler = StandardScaler()
        self._clf = SGDClassifier(
            loss="log_loss", alpha=alpha, learning_rate="optimal", random_state=seed
        )
        self._snapshot: tuple[StandardScaler, SGDClassifier] | None = None
        self.samples_seen = 0

    # -- prediction (any thread) ----------------------------------------------------

    def predict(self, features: np.ndarray) -> float:
        return self.predict_batch([features])[0]

    def predict_batch(self, features: Sequence[np.ndarray]) -> list[float]:
        snapshot = self._snapshot  # one read: the pair belongs together
        if snapshot is None:
            return [0.5] * len(features)
        scaler, clf = snapshot
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        return clf.predict_proba(scaler.transform(x))[:, 1].tolist()

    # -- learning (main loop only) --------------------------------------------------

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        """One incremental update from realized outcomes (rows in a deterministic order)."""
        if len(labels) == 0:
            return
        self._scaler.partial_fit(features)
        self._clf.partial_fit(self._scaler.transform(features), labels, classes=_CLASSES)
        self.samples_seen += len(labels)
        self._publish()

    def _publish(self) -> None:
        self._snapshot = (copy.deepcopy(self._scaler), copy.deepcopy(self._clf))


class CheapModel(OnlineModel):
    """Learns like :class:`OnlineModel`; predicts with one dot product (a few µs)."""

    def __init__(self, seed: int = 0, alpha: float = 0.1) -> None:
        super().__init__(seed, alpha)
        self._weights: tuple[np.ndarray, float] | None = None

    def predict(self, features: np.ndarray) -> float:
        weights = self._weights
        if weights is None:
            return 0.5
        w, b = weights
        return 1.0 / (1.0 + math.exp(-(float(np.dot(w, features)) + b)))

    def predict_batch(self, features: Sequence[np.ndarray]) -> list[float]:
        weights = self._weights
        if weights is None:
            return [0.5] * len(features)
        w, b = weights
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        return (1.0 / (1.0 + np.exp(-(x @ w + b)))).tolist()

    def _publish(self) -> None:
        # Fold the scaler into the coefficients: w·((x - mean) / scale) + b.
        scale = self._scaler.scale_
        w = self._clf.coef_[0] / scale
        b = float(self._clf.intercept_[0] - np.dot(w, self._scaler.mean_))
        self._weights = (np.ascontiguousarray(w), b)


def make_model(kind: str, seed: int) -> OnlineModel:
    """``"sgd"`` (scikit-learn predict) or ``"cheap"`` (numpy dot)."""
    if kind == "sgd":
        return OnlineModel(seed)
    if kind == "cheap":
        return CheapModel(seed)
    raise ValueError(f"unknown model {kind!r}: expected 'sgd' or 'cheap'")
