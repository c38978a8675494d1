"""Exact k-nearest-neighbour search, fast on two cores.

Each block of queries goes through two passes:

1. a float32 pass over every reference -- one BLAS matrix product for euclidean and cosine,
   a compiled loop for manhattan and other Minkowski powers -- that keeps the ``C > k`` best
   candidates per query;
2. an exact float64 pass that recomputes the candidates' distances from the original data,
   sorts them by (distance, index) and keeps ``k``.

The float32 pass can misorder references whose distances differ by less than its rounding
error, so every query is checked: if the C-th candidate's approximate distance, less a
rigorous bound on that error, does not clear the k-th exact distance, some reference outside
the candidates could still belong in the top k and that query is recomputed exactly against
every reference. The answer is therefore the exact top k, ties going to the lower index, as
scikit-learn's brute-force search gives it.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit, prange

METRICS = ("euclidean", "manhattan", "minkowski", "cosine")
# Float32 unit roundoff; the error bounds below are the classic gamma_n = n*u/(1-n*u).
_U32 = 2.0**-24
# Aim for a float32 distance block of about 256 MB: 10,000 x 60,000 MNIST stays under 1 GB.
_BLOCK_BYTES = 256 * 1024 * 1024
_QUERY_TILE = 64  # queries sharing one pass over the references in the compiled Lp loop


def canonical_metric(metric: str, p: float) -> tuple[str, float]:
    """Fold the aliases: minkowski with p=2 is euclidean, with p=1 manhattan."""
    if metric == "minkowski":
        if p == 2:
            return "euclidean", 2.0
        if p == 1:
            return "manhattan", 1.0
        return "minkowski", float(p)
    if metric == "euclidean":
        return "euclidean", 2.0
    if metric == "manhattan":
        return "manhattan", 1.0
    if metric == "cosine":
        return "cosine", 2.0
    raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")


class NeighborIndex:
    """Exact brute-force kNN over a fixed reference set.

    Parameters
    ----------
    X : array of shape (n_references, n_features)
        Reference points; kept as given (no copy when already C-contiguous) for the exact
        pass, plus one float32 copy for the fast pass.
    metric : {"euclidean", "manhattan", "minkowski", "cosine"}
    p : float
        Power of the Minkowski metric (only used with ``metric="minkowski"``).
    batch_size : int, optional
        Queries per block; by default chosen so a distance block is about 256 MB.

    Examples
    --------
    >>> import numpy as np
    >>> index = NeighborIndex(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    >>> distances, indices = index.query(np.array([[0.9, 0.0]]), k=2)
    >>> indices.tolist()
    [[1, 0]]
    """

    def __init__(self, X, metric: str = "euclidean", p: float = 2.0, batch_size=None):
        self.metric, self.p = canonical_metric(metric, p)
        X = np.ascontiguousarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"references must be a non-empty 2-D array, got shape {X.shape}")
        self.X = X
        self.batch_size = batch_size
        X32 = X.astype(np.float32)
        if self.metric == "euclidean":
            # Columns that are zero in every reference add nothing to any product with a
            # reference, and the query's own norm is the same for the whole row: drop both.
            self._columns = np.flatnonzero(np.any(X32 != 0, axis=0))
            self._R32 = np.ascontiguousarray(X32[:, self._columns])
            self._r_sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
            self._r_sq32 = self._r_sq.astype(np.float32)
            self._r_sq_max = float(self._r_sq.max())
        elif self.metric == "cosine":
            self._r_norm = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
            safe = np.where(self._r_norm > 0, self._r_norm, 1.0)
            self._R32 = (X / safe[:, None]).astype(np.float32)
        else:
            self._R32 = X32
            self._abs_max = float(np.abs(X32).max())

    @property
    def n_references(self) -> int:
        return self.X.shape[0]

    def query(self, Q, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (float64) and indices (int64) of the ``k`` nearest references.

        Rows are sorted by distance, ties by index.
        """
        Q = np.ascontiguousarray(Q)
        if Q.ndim != 2 or Q.shape[1] != self.X.shape[1]:
            raise ValueError(f"queries must have shape (n, {self.X.shape[1]}), got {Q.shape}")
        n_ref = self.n_references
        if not 1 <= k <= n_ref:
            raise ValueError(f"k={k} must be between 1 and the {n_ref} references")
        distances = np.empty((Q.shape[0], k), dtype=np.float64)
        indices = np.empty((Q.shape[0], k), dtype=np.int64)
        n_candidates = min(n_ref, 2 * k + 8)
        step = self._block_rows()
        for start in range(0, Q.shape[0], step):
            block = Q[start : start + step]
            d, i = self._query_block(block, k, n_candidates)
            distances[start : start + len(block)] = d
            indices[start : start + len(block)] = i
        return distances, indices

    def _block_rows(self) -> int:
        if self.batch_size:
            return int(self.batch_size)
        return max(64, _BLOCK_BYTES // (4 * self.n_references))

    def _query_block(self, Q, k, n_candidates):
        approx, candidates = self._approximate_candidates(Q, n_candidates)
        exact = _exact_sums(Q, self.X, candidates, _metric_code(self.metric), self.p)
        if self.metric == "cosine":
            exact = self._cosine_from_dots(Q, candidates, exact)
        order = np.lexsort((candidates, exact), axis=-1)
        exact = np.take_along_axis(exact, order, axis=1)[:, :k]
        candidates = np.take_along_axis(candidates, order, axis=1)[:, :k]
        if n_candidates < self.n_references:
            unsure = np.flatnonzero(self._lower_bound(Q, approx[:, -1]) <= exact[:, -1])
            for row in unsure:
                exact[row], candidates[row] = self._exact_row(Q[row], k)
        return self._finish(exact), candidates

    def _approximate_candidates(self, Q, n_candidates):
        if self.metric == "euclidean":
            products = np.asarray(Q[:, self._columns], dtype=np.float32) @ self._R32.T
            return _top_candidates_euclidean(products, self._r_sq32, n_candidates)
        if self.metric == "cosine":
            q_norm = np.sqrt(np.einsum("ij,ij->i", Q, Q, dtype=np.float64))
            Qn = (Q / np.where(q_norm > 0, q_norm, 1.0)[:, None]).astype(np.float32)
            return _top_candidates_negated(Qn @ self._R32.T, n_candidates)
        return _top_candidates_lp(
            Q.astype(np.float32), self._R32, self.p, n_candidates, _QUERY_TILE
        )

    def _lower_bound(self, Q, boundary):
        """A value below the true distance of every reference that is not a candidate."""
        d = self.X.shape[1]
        gamma = 2.0 * (d + 4) * _U32
        if self.metric == "euclidean":
            q_sq = np.einsum("ij,ij->i", Q, Q, dtype=np.float64)
            scale = q_sq + self._r_sq_max + 2.0 * np.sqrt(q_sq * self._r_sq_max)
            return q_sq + boundary.astype(np.float64) - gamma * scale
        if self.metric == "cosine":
            # boundary holds -similarity; distance = 1 - similarity with unit vectors.
            return 1.0 + boundary.astype(np.float64) - 4.0 * gamma
        # Minkowski sums: a relative error from float32 arithmetic, plus an absolute one from
        # rounding the inputs to float32 (zero for integer pixel data).
        largest = max(float(np.abs(Q).max()), self._abs_max)
        rounding = d * self.p * _U32 * (2.0 * largest) ** self.p
        return boundary.astype(np.float64) / (1.0 + gamma * (1.0 + self.p)) - rounding

    def _cosine_from_dots(self, Q, candidates, dots):
        q_norm = np.sqrt(np.einsum("ij,ij->i", Q, Q, dtype=np.float64))
        denominator = q_norm[:, None] * self._r_norm[candidates]
        similarity = np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)
        return np.clip(1.0 - similarity, 0.0, 2.0)

    def _exact_row(self, q, k):
        """Exact distances from one query to every reference; the k smallest, ties by index."""
        everything = np.arange(self.n_references, dtype=np.int64)[None, :]
        sums = _exact_sums(q[None, :], self.X, everything, _metric_code(self.metric), self.p)
        if self.metric == "cosine":
            sums = self._cosine_from_dots(q[None, :], everything, sums)
        order = np.argsort(sums[0], kind="stable")[:k]
        return sums[0, order], order

    def _finish(self, sums):
        """Turn the ranking quantity into the metric's distance."""
        if self.metric == "euclidean":
            return np.sqrt(sums)
        if self.metric == "minkowski":
            return sums ** (1.0 / self.p)
        return sums


def _metric_code(metric: str) -> int:
    return {"euclidean": 0, "manhattan": 1, "minkowski": 2, "cosine": 3}[metric]


def set_threads(n_jobs: int | None) -> int:
    """Threads for the compiled loops: ``None`` or -1 means every core."""
    import numba

    cores = os.cpu_count() or 1
    threads = (
        cores if n_jobs in (None, -1) else max(1, min(int(n_jobs), numba.config.NUMBA_NUM_THREADS))
    )
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return threads


# --- compiled loops -----------------------------------------------------------------------


@njit(inline="always")
def _insert(values, indices, value, index):
    """Insert into an ascending list, dropping its last entry; equal values keep order."""
    position = values.shape[0] - 1
    while position > 0 and values[position - 1] > value:
        values[position] = values[position - 1]
        indices[position] = indices[position - 1]
        position -= 1
    values[position] = value
    indices[position] = index


@njit(parallel=True, cache=True)
def _top_candidates_euclidean(products, r_sq, n_candidates):
    """Per row, the references with the smallest ||r||^2 - 2 q.r (float32)."""
    n_rows, n_refs = products.shape
    values = np.full((n_rows, n_candidates), np.inf, dtype=np.float32)
    indices = np.zeros((n_rows, n_candidates), dtype=np.int64)
    for row in prange(n_rows):
        row_values = values[row]
        row_indices = indices[row]
        for j in range(n_refs):
            value = r_sq[j] - 2.0 * products[row, j]
            if value < row_values[n_candidates - 1]:
                _insert(row_values, row_indices, value, j)
    return values, indices


@njit(parallel=True, cache=True)
def _top_candidates_negated(similarities, n_candidates):
    """Per row, the references with the largest similarity (kept as -similarity)."""
    n_rows, n_refs = similarities.shape
    values = np.full((n_rows, n_candidates), np.inf, dtype=np.float32)
    indices = np.zeros((n_rows, n_candidates), dtype=np.int64)
    for row in prange(n_rows):
        row_values = values[row]
        row_indices = indices[row]
        for j in range(n_refs):
            value = -similarities[row, j]
            if value < row_values[n_candidates - 1]:
                _insert(row_values, row_indices, value, j)
    return values, indices


@njit(fastmath=True, inline="always")
def _lp_sum32(q, r, p):
    total = np.float32(0.0)
    if p == 1.0:
        for t in range(q.shape[0]):
            total += abs(q[t] - r[t])
    elif p == 3.0:
        for t in range(q.shape[0]):
            diff = abs(q[t] - r[t])
            total += diff * diff * diff
    else:
        for t in range(q.shape[0]):
            total += abs(q[t] - r[t]) ** p
    return total


@njit(parallel=True, cache=True)
def _top_candidates_lp(Q, R, p, n_candidates, tile):
    """Per query, the references with the smallest sum |q - r|^p (float32).

    Queries go in tiles so each reference row is read from memory once per tile.
    """
    n_rows = Q.shape[0]
    n_refs = R.shape[0]
    values = np.full((n_rows, n_candidates), np.inf, dtype=np.float32)
    indices = np.zeros((n_rows, n_candidates), dtype=np.int64)
    p32 = np.float32(p)
    n_tiles = (n_rows + tile - 1) // tile
    for t in prange(n_tiles):
        lo = t * tile
        hi = min(lo + tile, n_rows)
        for j in range(n_refs):
            r = R[j]
            for row in range(lo, hi):
                value = _lp_sum32(Q[row], r, p32)
                if value < values[row, n_candidates - 1]:
                    _insert(values[row], indices[row], value, j)
    return values, indices


@njit(parallel=True, cache=True)
def _exact_sums(Q, X, candidates, metric, p):
    """float64 ranking quantity for each (query, candidate) from the original data.

    euclidean: sum of squares; manhattan: sum |d|; minkowski: sum |d|^p; cosine: dot product.
    """
    n_rows, n_candidates = candidates.shape
    out = np.empty((n_rows, n_candidates), dtype=np.float64)
    n_features = Q.shape[1]
    for row in prange(n_rows):
        for c in range(n_candidates):
            r = X[candidates[row, c]]
            total = 0.0
            if metric == 0:
                for t in range(n_features):
                    diff = np.float64(Q[row, t]) - np.float64(r[t])
                    total += diff * diff
            elif metric == 1:
                for t in range(n_features):
                    total += abs(np.float64(Q[row, t]) - np.float64(r[t]))
            elif metric == 2:
                for t in range(n_features):
                    total += abs(np.float64(Q[row, t]) - np.float64(r[t])) ** p
            else:
                for t in range(n_features):
                    total += np.float64(Q[row, t]) * np.float64(r[t])
            out[row, c] = total
    return out
