"""k-local hyperplane distance (Vincent & Bengio, "K-local hyperplane and convex distance
nearest neighbor algorithms", NIPS 2002).

A query's distance to a class is its distance to the affine hull of that class's ``k``
nearest training points: ``min_a || q - m - V a ||`` with ``m`` their mean and the rows of
``V`` their offsets from it. The hull fills the gaps between neighbours that a small
deformation opens (a stroke a little longer, a loop a little wider), which a single nearest
neighbour cannot. ``reg`` adds ``reg * |a|^2`` to the fit so that a hull of nearly collinear
points does not reach arbitrarily far (and the k x k system stays solvable when k exceeds
the dimension).
"""

from __future__ import annotations

import numpy as np

from digitrec.errors import ParameterError

__all__ = ["LocalHyperplanes"]

# Queries per batch when solving the k x k systems: (batch, k, d) float32 neighbours, ~60 MB
# for k=100 and d=300.
_SOLVE_BATCH = 500


class LocalHyperplanes:
    """Reference points grouped by class, ready for k-local hyperplane distances.

    ``references`` ``(n, d)`` with ``labels`` in ``0..n_classes-1``. Grouping once, not per
    query, is what keeps one query fast: it saves copying every class's points out of the
    whole set (20 ms for 60,000 x 300).
    """

    def __init__(self, references: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
        refs = np.asarray(references, dtype=np.float32)
        labels = np.asarray(labels)
        if refs.ndim != 2 or labels.shape != (len(refs),):
            raise ParameterError(f"references {refs.shape} and labels {labels.shape} do not match")
        self.labels = labels
        self.n_dims = refs.shape[1]
        self.groups = [np.ascontiguousarray(refs[labels == c]) for c in range(n_classes)]
        self.sq_norms = [np.einsum("ij,ij->i", g, g) for g in self.groups]

    def references(self) -> np.ndarray:
        """The reference points in their original order."""
        refs = np.empty((len(self.labels), self.n_dims), np.float32)
        for c, group in enumerate(self.groups):
            refs[self.labels == c] = group
        return refs

    def distances(
        self, queries: np.ndarray, k: int, reg: float, wanted: np.ndarray | None = None
    ) -> np.ndarray:
        """Distances ``(n_queries, n_classes)`` from each query to each class's local
        hyperplane, spanned by the class's ``k`` nearest references (all of them if it has
        fewer). ``wanted`` ``(n_queries, n_classes)`` bool limits the work to those pairs;
        the others are ``inf``, as are classes with no reference."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.n_dims:
            raise ParameterError(f"queries {q.shape} do not match {self.n_dims}-d references")
        if k < 1 or not reg > 0:
            raise ParameterError(f"k must be >= 1 and reg > 0, got {k!r}, {reg!r}")
        n_classes = len(self.groups)
        if wanted is None:
            wanted = np.ones((len(q), n_classes), bool)
        out = np.full((len(q), n_classes), np.inf)
        for c, members in enumerate(self.groups):
            rows = np.flatnonzero(wanted[:, c])
            if len(members) == 0 or len(rows) == 0:
                continue
            kc = min(k, len(members))
            for start in range(0, len(rows), _SOLVE_BATCH):
                batch = rows[start : start + _SOLVE_BATCH]
                out[batch, c] = _hull_distances(q[batch], members, self.sq_norms[c], kc, reg)
        return out


def _hull_distances(
    q: np.ndarray, members: np.ndarray, member_sq: np.ndarray, k: int, reg: float
) -> np.ndarray:
    # |q|^2 is the same for every member, so ranking by |m|^2 - 2 q.m is enough.
    d2 = member_sq[None, :] - 2.0 * (q @ members.T)
    near = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(members) else None
    hood = members[near] if near is not None else np.broadcast_to(members, (len(q), *members.shape))
    centre = hood.mean(axis=1)
    offsets = hood - centre[:, None, :]  # (b, k, d)
    target = (q - centre)[:, :, None]  # (b, d, 1)
    gram = (offsets @ offsets.transpose(0, 2, 1)).astype(np.float64)
    gram += reg * np.eye(k)
    coef = np.linalg.solve(gram, (offsets @ target).astype(np.float64))
    residual = target[:, :, 0] - (coef.astype(np.float32).transpose(0, 2, 1) @ offsets)[:, 0]
    return np.sqrt(np.einsum("ij,ij->i", residual, residual))
