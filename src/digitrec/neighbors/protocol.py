"""The one public interface of models that answer with their references.

A *reference classifier* answers a query from reference images it holds (its training set):
``knn`` (:class:`~digitrec.neighbors.knn.KNNClassifier`), ``knn-idm``
(:class:`~digitrec.neighbors.idm.IDMClassifier`) and ``knn-idm-hknn``
(:class:`~digitrec.neighbors.hybrid.HybridClassifier`). Explanations (the web app's
neighbours), the user's samples (:class:`~digitrec.neighbors.personal.PersonalModel`, which
adds references without refitting) and the tests use this interface and nothing else of
those classes.

References are numbered ``0 .. n_references - 1`` in the order they were fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

Answer = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Neighbor:
    """One reference behind an answer, as explanations show it: a training image or a
    stored sample."""

    label: int
    distance: float
    image: np.ndarray | None  # model input shape and value range; None if not saved
    sample_id: int | None  # None for a training image


@runtime_checkable
class ReferenceClassifier(Protocol):
    """What a classifier answering with its references offers (besides scikit-learn's API)."""

    classes_: np.ndarray
    n_neighbors: int
    weights: str

    def answer(self, X: np.ndarray, n_neighbors: int | None = None) -> Answer:
        """``(proba, distances, indices)``: :meth:`predict_proba` and, per query, the
        ``n_neighbors`` references behind the answer (``(n, k)`` distances and reference
        indices), from one search."""
        ...

    def answer_and_nearest(
        self, X: np.ndarray, n_neighbors: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`answer`, then the ``n_neighbors`` nearest references by the model's final
        distance (which the answer's own list need not be: ``knn-idm-hknn`` puts the
        answered class first). ``n_neighbors`` beyond what the model searches is clamped."""
        ...

    def reference_classes(self) -> np.ndarray:
        """The class index (into ``classes_``) of every reference."""
        ...

    def reference_inputs(self) -> np.ndarray:
        """The references as they were given to ``fit``, one row per reference."""
        ...

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        """What the model's final distance compares, for inputs ``X`` shaped like ``fit``'s:
        computed once for references added later (see :meth:`distances_to`)."""
        ...

    def shortlist_metric(self) -> tuple[str, float]:
        """A metric of :func:`~digitrec.neighbors.search.canonical_metric` (name, power) on
        :meth:`reference_features`, one row each, that picks the references worth measuring
        with :meth:`distances_to` out of many: the final distance itself where it is such a
        metric, else one that orders references much as it does."""
        ...

    def distances_to(self, X: np.ndarray, features: np.ndarray) -> np.ndarray:
        """``(len(X), len(features))`` final distances from the queries ``X`` to references
        given by their :meth:`reference_features`, measured as the model measures its own."""
        ...
