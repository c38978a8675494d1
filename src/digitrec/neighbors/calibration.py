"""Probabilities from nearest-neighbour distances: a softmin over each class's nearest
distance, and the temperature that makes it honest.

A vote of one nearest neighbour says 100% for every answer, right or wrong. How much nearer
the answered class is than the next one says how sure the answer is: ``softmin`` turns the
per-class distances into probabilities, and ``fit_temperature`` chooses the temperature that
gives the lowest log loss on digits the references do not hold (the best temperature for
the log loss is the one whose probabilities are calibrated, as far as one number can make
them so).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["fit_temperature", "log_loss", "nearest_of_each_class", "softmin"]

# The search for the temperature spans this many times below and above the typical gap
# between the nearest and the second-nearest class (any distance's units).
_SPAN = 1e4
# A true class with no probability at all (not among the candidates) costs as much as this
# probability: finite, so one such digit cannot decide the whole fit.
_FLOOR = 1e-6


def nearest_of_each_class(dist: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, n_classes)``: each class's smallest distance among a query's candidates
    (``dist`` and their class indices ``labels``, both ``(n, k)``), ``inf`` if it has none."""
    nearest = np.full((len(dist), n_classes), np.inf)
    np.minimum.at(nearest, (np.arange(len(dist))[:, None], labels), dist)
    return nearest


def softmin(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``exp(-(score - lowest) / temperature)``, normalised; ``inf`` scores get 0."""
    gap = scores - scores.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf - inf for classes not among the candidates
        proba = np.where(np.isfinite(scores), np.exp(-gap / temperature), 0.0)
    return proba / proba.sum(axis=1, keepdims=True)


def log_loss(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log probability that ``softmin(scores, temperature)`` gives the true
    class indices ``labels``."""
    p_true = softmin(scores, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(p_true, _FLOOR)).mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature of :func:`softmin` with the lowest :func:`log_loss` for class scores
    ``(n, n_classes)`` (lower is better) of held-out digits whose true class indices are
    ``labels``."""
    ordered = np.sort(scores, axis=1)
    gaps = ordered[:, 1] - ordered[:, 0] if scores.shape[1] > 1 else ordered[:, 0]
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    scale = float(np.median(gaps)) if len(gaps) else 1.0
    # Searched on a log scale: the loss is smooth there over many orders of magnitude.
    found = minimize_scalar(
        lambda log_t: log_loss(scores, labels, float(np.exp(log_t))),
        bounds=(np.log(scale / _SPAN), np.log(scale * _SPAN)),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(found.x))
