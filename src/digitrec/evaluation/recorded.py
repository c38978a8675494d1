"""The test-split evaluation a model carries from its training run.

``digitrec train`` predicts the test images once; it keeps those predictions in the model's
manifest together with a hash of the test split, so that ``digitrec evaluate`` right after
(``make run``) reports them instead of predicting the same 10,000 images again. They are
reused only for exactly the same test images: the saved model cannot change without its
manifest, which holds them.
"""

from __future__ import annotations

import hashlib

import numpy as np

from digitrec.data.datasets import Dataset
from digitrec.evaluation.metrics import Evaluation, evaluation_of
from digitrec.models import Model

# Predictions of larger test splits are not kept: the manifest stays well under its 1 MB.
MAX_RECORDED = 50_000
# Each prediction is kept as one character, its class index: 10 kB for MNIST's test split.
_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


def test_fingerprint(data: Dataset) -> str:
    """sha256 of the test images and labels only (a training subset does not change it)."""
    digest = hashlib.sha256()
    for array in (data.X_test, data.y_test):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def record(model: Model, data: Dataset, result: Evaluation) -> None:
    """Keep ``result`` (on ``data``'s test split) in ``model.info`` for :func:`recorded`."""
    model.info["metrics"] = {"accuracy": result.accuracy, "n": result.n}
    if result.n > MAX_RECORDED or len(model.classes) > len(_SYMBOLS):
        return
    # classes_ are sorted (np.unique), so searchsorted finds each prediction's index.
    index = np.searchsorted(model.classes, result.y_pred)
    model.info["test_predictions"] = {
        "test_fingerprint": test_fingerprint(data),
        "seconds": round(result.seconds, 3),
        "classes": "".join(_SYMBOLS[i] for i in index.tolist()),
    }


def recorded(model: Model, data: Dataset) -> Evaluation | None:
    """The evaluation recorded at training, if it was made on exactly ``data``'s test split."""
    kept = model.info.get("test_predictions")
    if not isinstance(kept, dict) or kept.get("test_fingerprint") != test_fingerprint(data):
        return None
    symbols = kept.get("classes")
    if not isinstance(symbols, str) or len(symbols) != len(data.y_test):
        return None
    index = np.array([_SYMBOLS.find(s) for s in symbols], dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= len(model.classes)):
        return None
    predicted = np.asarray(model.classes)[index]
    return evaluation_of(
        data.y_test, predicted, float(kept.get("seconds", 0.0)), list(model.classes)
    )
