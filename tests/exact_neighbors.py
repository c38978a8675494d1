"""Exact nearest neighbours by brute force, the yardstick for our engines and scikit-learn's.

UCI digits are small integers (0..16), so a Minkowski distance with an integer power is
compared through its power sum, an exact int64: two distances are equal only when they truly
are, with no rounding to hide or invent a tie. Where training images tie at the k-th
distance, which of them votes is a choice; our documented rule is the lower training index,
and scikit-learn's is whatever its heap leaves, so comparisons with it skip those queries.
"""

import numpy as np
from scipy.spatial.distance import cdist


def ranking_distances(queries: np.ndarray, references: np.ndarray, metric: str, p: float):
    """Numbers that order the references exactly as the metric does, for every query.

    Integer images with an integer Minkowski power give exact power sums; any other case
    (cosine, a fractional power) falls back to scipy's float distances.
    """
    a = queries.reshape(len(queries), -1)
    b = references.reshape(len(references), -1)
    power = 1 if metric == "manhattan" else p
    integral = np.array_equal(a, np.round(a)) and np.array_equal(b, np.round(b))
    if metric not in ("minkowski", "manhattan") or power != int(power) or not integral:
        return metric_distances(a, b, metric, p)
    if power == 2:
        # |a|^2 + |b|^2 - 2ab through a float64 product: every partial sum of integer pixels
        # (at most 255^2 * 784) is far below 2^53, so the result is the exact integer.
        a, b = a.astype(np.float64), b.astype(np.float64)
        sums = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * (a @ b.T)
        return sums.astype(np.int64)
    a, b = a.astype(np.int64), b.astype(np.int64)
    sums = np.empty((len(a), len(b)), np.int64)
    step = max(1, 2_000_000 // (b.shape[0] * b.shape[1]))  # keeps each difference array small
    for start in range(0, len(a), step):
        diff = np.abs(a[start : start + step, None, :] - b[None, :, :])
        sums[start : start + step] = (diff ** int(power)).sum(axis=2)
    return sums


def metric_distances(queries: np.ndarray, references: np.ndarray, metric: str, p: float):
    """The metric's own values (scipy's), for distance weights."""
    if metric == "cosine":
        return cdist(queries, references, "cosine")
    return cdist(queries, references, "minkowski", p=1 if metric == "manhattan" else p)


def tied_at_kth(ranking: np.ndarray, k: int) -> np.ndarray:
    """Per query: is the k-th smallest distance shared with the (k+1)-th?"""
    if k >= ranking.shape[1]:
        return np.zeros(len(ranking), bool)
    ordered = np.sort(ranking, axis=1)
    return ordered[:, k - 1] == ordered[:, k]


def reference_proba(
    ranking: np.ndarray, distances: np.ndarray, labels: np.ndarray, k: int, weights: str
) -> np.ndarray:
    """Class probabilities (classes 0..9) by the documented rule, equal distances to the
    lower training index; ``distances`` are the metric's values, used for the weights."""
    order = np.argsort(ranking, axis=1, kind="stable")[:, :k]
    if weights == "uniform":
        votes_of = np.ones(order.shape)
    else:
        nearest = np.take_along_axis(distances, order, axis=1)
        with np.errstate(divide="ignore"):
            votes_of = 1.0 / nearest
        # scikit-learn's convention: a query at distance 0 is voted for by its exact matches only
        exact = np.isinf(votes_of)
        votes_of[exact.any(axis=1)] = exact[exact.any(axis=1)]
    votes = np.zeros((len(order), 10))
    np.add.at(votes, (np.arange(len(order))[:, None], labels[order]), votes_of)
    return votes / votes.sum(axis=1, keepdims=True)
