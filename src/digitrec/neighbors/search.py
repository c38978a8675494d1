"""Exact k-nearest-neighbour search, fast on two cores.

:class:`NeighborIndex` never approximates: it computes a cheap lower bound on every
distance, and exact distances only for the references the bounds cannot rule out.

- **euclidean and cosine**: each reference is split into its projection on a few principal
  directions and the length of the rest; one float32 matrix product in that small space
  bounds every squared distance from below (Cauchy-Schwarz on the rest, less a rigorous
  bound on float32's rounding error).
- **manhattan and other Minkowski powers**: features summed over pixel blocks bound
  ``sum |a - b|^p`` from below (power-mean inequality).

Per query, the ``2k + 8`` references with the lowest bounds are measured exactly in float64;
the k-th exact distance then rules out every reference whose bound is above it, and the few
left are measured too. The answer is the exact top k, ties going to the lower index, as
scikit-learn's brute-force search gives it. :func:`exact_distances` measures small sets
(a user's samples) directly.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import numba
import numpy as np
import scipy.linalg
from numba import njit, prange

from digitrec.kernels import announce_compiling

announce_compiling()  # a first run's compilation shows as a status line, not a silent wait

METRICS = ("euclidean", "manhattan", "minkowski", "cosine")
# Float32 unit roundoff; the error bounds below are the classic gamma_n = n*u/(1-n*u).
_U32 = 2.0**-24
# Aim for a float32 distance block of about 256 MB: 10,000 x 60,000 MNIST stays under 1 GB.
_BLOCK_BYTES = 256 * 1024 * 1024
_QUERY_TILE = 64  # queries sharing one pass over the references in the compiled Lp loop
# Blocks of fewer euclidean/cosine queries run the compiled loop on one thread: right after
# the BLAS product, waking numba's second thread costs more than it saves (MNIST, 2 cores:
# 1 query 0.5 ms on one thread, 8.3 ms on two; 256 queries 71 vs 88 ms; 1,000: 296 vs 237).
_PARALLEL_ROWS = 512
_PCA_SAMPLE = 16384  # references used to find the principal directions


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


def exact_distances(Q: np.ndarray, S: np.ndarray, metric: str, p: float = 2.0) -> np.ndarray:
    """``(len(Q), len(S))`` float64 distances, computed as the exact pass of
    :class:`NeighborIndex` computes them (``metric`` as :func:`canonical_metric` gives it).

    Brute force, for small reference sets (a user's samples): building a
    :class:`NeighborIndex` (a principal component fit over all features) would cost far more
    than searching them.
    """
    Q = np.asarray(Q, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    if metric == "cosine":
        q_norm = np.sqrt(np.einsum("ij,ij->i", Q, Q))
        s_norm = np.sqrt(np.einsum("ij,ij->i", S, S))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.clip(1.0 - (Q @ S.T) / np.outer(q_norm, s_norm), 0.0, 2.0)
        out[(q_norm == 0)[:, None] | (s_norm == 0)[None, :]] = 1.0
        return out
    out = np.empty((len(Q), len(S)), dtype=np.float64)
    # Chunks keep the (queries, chunk, features) difference array near 16 MB.
    chunk = max(1, (1 << 21) // max(1, len(Q) * S.shape[1]))
    for start in range(0, len(S), chunk):
        diff = np.abs(Q[:, None, :] - S[None, start : start + chunk, :])
        if metric == "euclidean":
            out[:, start : start + chunk] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        elif metric == "manhattan":
            out[:, start : start + chunk] = diff.sum(axis=2)
        else:
            out[:, start : start + chunk] = (diff**p).sum(axis=2) ** (1.0 / p)
    return out


class NeighborIndex:
    """Exact brute-force kNN over a fixed reference set.

    Parameters
    ----------
    X : array of shape (n_references, n_features)
        Reference points; kept as given (no copy when already C-contiguous) for the exact
        pass.
    metric : {"euclidean", "manhattan", "minkowski", "cosine"}
    p : float
        Power of the Minkowski metric (only used with ``metric="minkowski"``).
    batch_size : int, optional
        Queries per block; by default chosen so a distance block is about 256 MB.
    n_components : int
        Principal directions used for the euclidean and cosine lower bounds.

    Examples
    --------
    >>> import numpy as np
    >>> index = NeighborIndex(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    >>> distances, indices = index.query(np.array([[0.9, 0.0]]), k=2)
    >>> indices.tolist()
    [[1, 0]]
    """

    def __init__(self, X, metric="euclidean", p=2.0, batch_size=None, n_components=64):
        self.metric, self.p = canonical_metric(metric, p)
        X = np.ascontiguousarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"references must be a non-empty 2-D array, got shape {X.shape}")
        self.X = X
        self.batch_size = batch_size
        if self.metric in ("euclidean", "cosine"):
            self._r_norm = np.sqrt(_row_sq_norms(X))
            space = _unit_rows(X, self._r_norm) if self.metric == "cosine" else X
            self._bounds = _ProjectionBound.fit(space, n_components)
        else:
            self._pooling = _Pooling.fit(X, self.p)

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
        if self.metric in ("euclidean", "cosine"):
            products = np.empty((min(step, Q.shape[0]), n_ref), dtype=np.float32)
        for start in range(0, Q.shape[0], step):
            block = Q[start : start + step]
            if self.metric in ("euclidean", "cosine"):
                d, i = self._query_bounded(block, k, n_candidates, products)
            else:
                d, i = self._query_lp(block, k, n_candidates)
            distances[start : start + len(block)] = d
            indices[start : start + len(block)] = i
        return distances, indices

    def _block_rows(self) -> int:
        if self.batch_size:
            return int(self.batch_size)
        return max(64, _BLOCK_BYTES // (4 * self.n_references))

    # euclidean and cosine: projection lower bounds, then exact distances for the few
    # references whose bound does not rule them out.

    def _query_bounded(self, Q, k, n_candidates, buffer):
        q_norm = np.sqrt(_row_sq_norms(Q))
        cosine = self.metric == "cosine"
        space = _unit_rows(Q, q_norm) if cosine else Q
        products, q_sq, error = self._bounds.products(space, buffer)
        with numba_threads(1) if len(Q) < _PARALLEL_ROWS else nullcontext():
            sums, indices = _search_with_bounds(
                products,
                q_sq,
                self._bounds.r_sq,
                error,
                0.5 if cosine else 1.0,
                Q,
                self.X,
                q_norm,
                self._r_norm,
                3 if cosine else 0,
                k,
                n_candidates,
            )
        return (sums if cosine else np.sqrt(sums)), indices

    # manhattan and other Minkowski powers: bounds from pooled features, then exact
    # distances for the few references whose bounds do not rule them out.

    def _query_lp(self, Q, k, n_candidates):
        coarse, fine = self._pooling.pooled(Q)
        sums, indices = _search_lp_with_bounds(
            coarse,
            self._pooling.coarse,
            self._pooling.coarse_size,
            fine,
            self._pooling.fine,
            self._pooling.fine_size,
            Q,
            self.X,
            self.p,
            k,
            n_candidates,
            _QUERY_TILE,
        )
        return (sums ** (1.0 / self.p) if self.metric == "minkowski" else sums), indices


class _Pooling:
    """Lower bounds on Minkowski sums from features summed over groups.

    For a group of g features, the power-mean inequality gives
    ``sum |a_i - b_i|^p >= |sum a_i - sum b_i|^p / g^(p-1)``, so distances between pooled
    rows bound the true ones from below at a fraction of the cost. Square images pool
    2x2 (and 4x4) pixel blocks, whose pixels move together; other rows pool runs of
    neighbouring features. On MNIST, 2x2 blocks leave about 60 of 48,000 references per
    query to measure exactly for p=1, and about 1,200 for p=3.
    """

    def __init__(self, fine_groups, coarse_groups, fine_size, coarse_size, X):
        self.fine_groups, self.coarse_groups = fine_groups, coarse_groups
        self.fine_size, self.coarse_size = fine_size, coarse_size
        self.fine, self.coarse = self._pool(X, fine_groups), self._pool(X, coarse_groups)

    @classmethod
    def fit(cls, X, p):
        d = X.shape[1]
        side = round(d**0.5)
        if side * side == d and side % 4 == 0:
            fine, fine_size = _block_groups(side, 2), 4
            coarse, coarse_size = _block_groups(side, 4), 16
        else:
            # A last, smaller group only makes its bound looser, never wrong.
            fine, fine_size = np.arange(d) // 2, 2
            coarse, coarse_size = np.arange(d) // 8, 8
        if p > 1:
            # Above p=1 the coarse bound is too loose to pay for itself: use the fine one.
            coarse, coarse_size = fine, fine_size
        return cls(fine, coarse, fine_size, coarse_size, X)

    @staticmethod
    def _pool(X, groups):
        """Sum each row's features per group: one product with a 0/1 matrix (exact here)."""
        membership = np.zeros((X.shape[1], int(groups.max()) + 1), dtype=np.float64)
        membership[np.arange(X.shape[1]), groups] = 1.0
        return np.ascontiguousarray(X, dtype=np.float64) @ membership

    def pooled(self, Q):
        return self._pool(Q, self.coarse_groups), self._pool(Q, self.fine_groups)


def _block_groups(side, block):
    """Group index of each pixel of a ``side x side`` image in ``block x block`` squares."""
    rows, cols = np.divmod(np.arange(side * side), side)
    return (rows // block) * (side // block) + cols // block


class _ProjectionBound:
    """Lower bounds on squared euclidean distances from a few principal directions.

    With centred rows split into their projection ``P`` on ``m`` principal directions and a
    residual of length ``rho``, ``||a - b||^2 >= ||a||^2 + ||b||^2 - 2 (Pa.Pb + rho_a rho_b)``
    (Cauchy-Schwarz on the residuals). That is one float32 product in ``m + 1`` dimensions
    instead of ``d``; on MNIST, 64 directions leave a few dozen references per query whose
    bound does not rule them out.
    """

    def __init__(self, mean, directions, augmented, r_sq):
        self.mean = mean
        self.directions = directions
        self.augmented = augmented  # (n, m + 1) float32: projection and residual length
        self.r_sq = r_sq  # (n,) float64: squared length of each centred reference
        self.r_len_max = float(np.sqrt(r_sq.max()))

    @classmethod
    def fit(cls, X, n_components):
        n, d = X.shape
        m = min(n_components, d)
        mean = X.mean(axis=0, dtype=np.float64)
        # Any orthonormal directions give valid bounds; principal ones give tight bounds, and
        # an evenly spaced sample of the references finds them as well as all of them would.
        sample = X[:: max(1, n // _PCA_SAMPLE)]
        centred = (sample - mean).astype(np.float32)
        covariance = (centred.T @ centred).astype(np.float64)
        _, vectors = scipy.linalg.eigh(covariance, subset_by_index=(d - m, d - 1))
        directions = np.ascontiguousarray(vectors[:, ::-1])
        augmented = np.empty((n, m + 1), dtype=np.float32)
        r_sq = np.empty(n, dtype=np.float64)
        for chunk in _chunks(n):
            augmented[chunk], r_sq[chunk] = cls._augment(X[chunk], mean, directions)
        return cls(mean, directions, augmented, r_sq)

    @staticmethod
    def _augment(rows, mean, directions):
        centred = rows - mean
        projected = centred @ directions
        sq = np.einsum("ij,ij->i", centred, centred)
        residual = np.sqrt(np.maximum(sq - np.einsum("ij,ij->i", projected, projected), 0.0))
        return np.column_stack([projected, residual]).astype(np.float32), sq

    def products(self, Q, out):
        """Float32 products with every reference (into ``out``), squared lengths, error bounds.

        Reusing one output block across query blocks matters: with only m + 1 = 65 terms
        per product, page-faulting a fresh 256 MB result costs more than the arithmetic.
        """
        augmented, q_sq = self._augment(Q, self.mean, self.directions)
        products = np.matmul(augmented, self.augmented.T, out=out[: len(Q)])
        # Rigorous bound on float32 rounding in the product and in the inputs (gamma_{m+1}
        # for the sums, 2u for converting each factor), with a factor 2 to spare.
        gamma = 4.0 * (augmented.shape[1] + 8) * _U32
        error = 2.0 * gamma * np.sqrt(q_sq) * self.r_len_max
        return products, q_sq, error


def _chunks(n, size=8192):
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def _row_sq_norms(X):
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def _unit_rows(X, norms):
    return X / np.where(norms > 0, norms, 1.0)[:, None]


@contextmanager
def numba_threads(count: int):
    """Run numba's parallel loops on ``count`` threads inside the block."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def set_threads(n_jobs: int | None) -> int:
    """Threads for the compiled loops: ``None`` or -1 means every core."""
    cores = os.cpu_count() or 1
    threads = (
        cores if n_jobs in (None, -1) else max(1, min(int(n_jobs), numba.config.NUMBA_NUM_THREADS))
    )
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return threads


# --- compiled loops -----------------------------------------------------------------------


@njit(inline="always")
def _insert_pair(values, indices, value, index):
    """Insert (value, index) into a list ascending by value then index, if it belongs."""
    last = values.shape[0] - 1
    if value > values[last] or (value == values[last] and index >= indices[last]):
        return
    position = last
    while position > 0 and (
        values[position - 1] > value
        or (values[position - 1] == value and indices[position - 1] > index)
    ):
        values[position] = values[position - 1]
        indices[position] = indices[position - 1]
        position -= 1
    values[position] = value
    indices[position] = index


@njit(inline="always")
def _exact_distance(q, r, metric, q_norm, r_norm):
    """Squared euclidean (metric 0) or cosine distance (metric 3) in float64."""
    total = 0.0
    if metric == 0:
        for t in range(q.shape[0]):
            diff = np.float64(q[t]) - np.float64(r[t])
            total += diff * diff
        return total
    for t in range(q.shape[0]):
        total += np.float64(q[t]) * np.float64(r[t])
    if q_norm == 0.0 or r_norm == 0.0:
        return 1.0
    return min(2.0, max(0.0, 1.0 - total / (q_norm * r_norm)))


@njit(parallel=True, cache=True)
def _search_with_bounds(
    products, q_sq, r_sq, error, scale, Q, X, q_norm, r_norm, metric, k, n_candidates
):
    """Exact k nearest per query, computing exact distances only where bounds allow.

    ``scale * (q_sq + r_sq - 2 * products)`` bounds each distance from below up to
    ``error``. The ``n_candidates`` references with the lowest bounds are measured exactly;
    the k-th exact distance so far then rules out every reference whose bound exceeds it,
    and the rest are measured too.
    """
    n_rows, n_refs = products.shape
    out_values = np.empty((n_rows, k), dtype=np.float64)
    out_indices = np.empty((n_rows, k), dtype=np.int64)
    for row in prange(n_rows):
        bounds = np.full(n_candidates, np.inf, dtype=np.float64)
        candidates = np.zeros(n_candidates, dtype=np.int64)
        for j in range(n_refs):
            bound = scale * (q_sq[row] + r_sq[j] - 2.0 * np.float64(products[row, j]))
            if bound < bounds[n_candidates - 1]:
                _insert_pair(bounds, candidates, bound, j)
        best = np.full(k, np.inf, dtype=np.float64)
        best_indices = np.full(k, n_refs, dtype=np.int64)
        q = Q[row]
        for c in range(n_candidates):
            j = candidates[c]
            distance = _exact_distance(q, X[j], metric, q_norm[row], r_norm[j])
            _insert_pair(best, best_indices, distance, j)
        boundary = bounds[n_candidates - 1]
        slack = scale * error[row]
        if n_candidates < n_refs and boundary - slack <= best[k - 1]:
            for j in range(n_refs):
                bound = scale * (q_sq[row] + r_sq[j] - 2.0 * np.float64(products[row, j]))
                if bound < boundary or bound - slack > best[k - 1]:
                    continue  # already measured, or ruled out
                if bound == boundary:
                    seen = False
                    for c in range(n_candidates):
                        seen = seen or candidates[c] == j
                    if seen:
                        continue
                distance = _exact_distance(q, X[j], metric, q_norm[row], r_norm[j])
                _insert_pair(best, best_indices, distance, j)
        out_values[row] = best
        out_indices[row] = best_indices
    return out_values, out_indices


# fastmath lets the sum vectorise; the reordering changes it by a relative 1e-14 at most,
# which the 1e-9 slack of the caller absorbs.
@njit(fastmath=True, cache=True)
def _pooled_bound(a, b, p, group_size):
    total = 0.0
    if p == 1.0:
        for t in range(a.shape[0]):
            total += abs(a[t] - b[t])
        return total
    if p == 3.0:  # the tutorials' grid: a cube by multiplication, not pow()
        for t in range(a.shape[0]):
            diff = abs(a[t] - b[t])
            total += diff * diff * diff
    else:
        for t in range(a.shape[0]):
            total += abs(a[t] - b[t]) ** p
    return total / group_size ** (p - 1.0)


@njit(inline="always")
def _lp_sum(q, r, p):
    total = 0.0
    if p == 1.0:
        for t in range(q.shape[0]):
            total += abs(np.float64(q[t]) - np.float64(r[t]))
    elif p == 3.0:
        for t in range(q.shape[0]):
            diff = abs(np.float64(q[t]) - np.float64(r[t]))
            total += diff * diff * diff
    else:
        for t in range(q.shape[0]):
            total += abs(np.float64(q[t]) - np.float64(r[t])) ** p
    return total


@njit(parallel=True, cache=True)
def _search_lp_with_bounds(Qc, Rc, coarse_size, Qf, Rf, fine_size, Q, X, p, k, n_candidates, tile):
    """Exact k smallest sums of |q - r|^p per query, ties to the lower index.

    Queries go in tiles so each pooled reference row is read once per tile. The coarse
    bounds of a tile are kept; the ``n_candidates`` lowest are measured exactly, and every
    other reference is measured only if both its coarse and its fine bound are within the
    k-th exact sum so far. A relative slack of 1e-9 covers float64 rounding in the bounds.
    """
    n_rows = Q.shape[0]
    n_refs = X.shape[0]
    out_values = np.empty((n_rows, k), dtype=np.float64)
    out_indices = np.empty((n_rows, k), dtype=np.int64)
    n_tiles = (n_rows + tile - 1) // tile
    for t in prange(n_tiles):
        lo = t * tile
        hi = min(lo + tile, n_rows)
        bounds = np.empty((hi - lo, n_refs), dtype=np.float64)
        for j in range(n_refs):
            rc = Rc[j]
            for row in range(lo, hi):
                bounds[row - lo, j] = _pooled_bound(Qc[row], rc, p, coarse_size)
        for row in range(lo, hi):
            row_bounds = bounds[row - lo]
            lowest = np.full(n_candidates, np.inf, dtype=np.float64)
            candidates = np.zeros(n_candidates, dtype=np.int64)
            for j in range(n_refs):
                if row_bounds[j] < lowest[n_candidates - 1]:
                    _insert_pair(lowest, candidates, row_bounds[j], j)
            best = np.full(k, np.inf, dtype=np.float64)
            best_indices = np.full(k, n_refs, dtype=np.int64)
            q = Q[row]
            for c in range(n_candidates):
                _insert_pair(best, best_indices, _lp_sum(q, X[candidates[c]], p), candidates[c])
            boundary = lowest[n_candidates - 1]
            if n_candidates < n_refs and boundary * (1.0 - 1e-9) <= best[k - 1]:
                for j in range(n_refs):
                    bound = row_bounds[j]
                    if bound < boundary or bound * (1.0 - 1e-9) > best[k - 1]:
                        continue  # already measured, or ruled out
                    if bound == boundary:
                        seen = False
                        for c in range(n_candidates):
                            seen = seen or candidates[c] == j
                        if seen:
                            continue
                    if _pooled_bound(Qf[row], Rf[j], p, fine_size) * (1.0 - 1e-9) > best[k - 1]:
                        continue
                    _insert_pair(best, best_indices, _lp_sum(q, X[j], p), j)
            out_values[row] = best
            out_indices[row] = best_indices
    return out_values, out_indices
