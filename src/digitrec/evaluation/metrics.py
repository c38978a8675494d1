"""Metrics of a model on labelled images: accuracy, per-class report, confusion matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from digitrec import progress as display
from digitrec.models import Model

# Images predicted per call: large enough for efficient BLAS blocks, small enough to show
# progress on MNIST's 10,000 test images.
PREDICT_CHUNK = 2000


@dataclass
class Evaluation:
    """What ``digitrec evaluate`` reports."""

    accuracy: float
    n: int
    labels: list
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    confusion: np.ndarray
    seconds: float
    y_true: np.ndarray
    y_pred: np.ndarray

    def per_class(self) -> dict[str, dict[str, float]]:
        return {
            str(label): {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for label, p, r, f, s in zip(
                self.labels, self.precision, self.recall, self.f1, self.support, strict=True
            )
        }

    def to_json(self) -> dict:
        return {
            "accuracy": round(self.accuracy, 6),
            "n": self.n,
            "per_class": self.per_class(),
            "confusion": self.confusion.tolist(),
            "seconds": round(self.seconds, 3),
        }

    def report(self) -> str:
        """scikit-learn's classification report, four decimals."""
        return classification_report(self.y_true, self.y_pred, labels=self.labels, digits=4)

    def confusion_text(self) -> str:
        width = max(5, len(str(self.confusion.max())) + 1)
        header = "true\\pred" + "".join(f"{label!s:>{width}}" for label in self.labels)
        rows = [
            f"{label!s:>9}" + "".join(f"{count:>{width}}" for count in row)
            for label, row in zip(self.labels, self.confusion, strict=True)
        ]
        return "\n".join([header, *rows])

    def most_confused(self, top: int = 5) -> list[tuple[object, object, int]]:
        """The (true, predicted, count) pairs with the most mistakes."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None)[::-1][:top]
        pairs = [np.unravel_index(i, off.shape) for i in order]
        return [(self.labels[t], self.labels[p], int(off[t, p])) for t, p in pairs if off[t, p]]


def evaluate(
    model: Model, images: np.ndarray, labels: np.ndarray, progress: bool = False
) -> Evaluation:
    """Predict every image and compare with its label (``progress``: show a bar)."""
    start = time.perf_counter()
    parts = []
    with display.bar(
        total=len(images), desc="predicting the test images", unit="image", enabled=progress
    ) as bar:
        for i in range(0, len(images), PREDICT_CHUNK):
            parts.append(model.predict(images[i : i + PREDICT_CHUNK]))
            bar.update(len(parts[-1]))
    predicted = np.concatenate(parts)
    seconds = time.perf_counter() - start
    return evaluation_of(labels, predicted, seconds, list(model.classes))


def evaluation_of(y_true, y_pred, seconds: float, labels: list) -> Evaluation:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return Evaluation(
        accuracy=float(np.mean(y_true == y_pred)),
        n=int(len(y_true)),
        labels=[label.item() if isinstance(label, np.generic) else label for label in labels],
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        seconds=seconds,
        y_true=np.asarray(y_true),
        y_pred=np.asarray(y_pred),
    )
