"""A neighbour model that includes the user's stored samples at once.

:class:`PersonalModel` wraps a trained kNN model (``knn``, ``knn-idm`` or ``knn-idm-hknn``)
and adds the stored samples (:mod:`digitrec.persistence.sample_db`) to its reference set
without refitting it: the samples live in a second, small reference set searched exactly,
and the two neighbour lists are merged by distance. Adding or deleting a sample touches
only the small set, so it costs milliseconds however large the training set is.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from digitrec.features.transformers import as_images
from digitrec.models import Model
from digitrec.neighbors.hybrid import HybridClassifier
from digitrec.neighbors.idm import IDMClassifier, idm_features, idm_pairs
from digitrec.neighbors.knn import KNNClassifier, vote
from digitrec.neighbors.search import canonical_metric
from digitrec.persistence.sample_db import Sample, SampleError, SampleStore
from digitrec.reading.recognize import tiles_to_model_input


@dataclass(frozen=True)
class Neighbor:
    """One reference image near a query: from the training set, or a stored sample."""

    label: int
    distance: float
    image: np.ndarray | None  # model input shape and value range; None if not saved
    sample_id: int | None  # None for a training image


@dataclass(frozen=True)
class _SampleSet:
    """An immutable snapshot of the samples in model-feature form; replaced, never edited,
    so a search in progress keeps a consistent set while another thread adds a sample."""

    ids: np.ndarray  # (n,) int64 sample ids
    features: np.ndarray  # (n, ...) what the model's final distance compares
    classes: np.ndarray  # (n,) class index of each sample's label
    images: np.ndarray  # (n, h, w) model-input images, for explanations
    revision: int


class _KNNReferences:
    """The training set of a kNN pipeline: its features, its index, exact distances."""

    def __init__(self, model: Model, knn: KNNClassifier) -> None:
        self.estimator = model.estimator
        self.knn = knn
        self.metric, self.p = canonical_metric(knn.metric, knn.p)
        self.n_neighbors, self.weights = knn.n_neighbors, knn.weights
        self.labels = knn._y
        self.n_training = int(knn.n_samples_fit_)

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator[:-1].transform(images), dtype=np.float64)

    def search(self, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, None]:
        """The ``k`` nearest training images, and the model's own answer: None, the vote of
        the neighbours is this model's answer."""
        # The index itself, not KNNClassifier.kneighbors: that one sets thread counts for
        # batch work (all cores), which the caller's search context has chosen otherwise.
        return *self.knn._index.query(features, min(k, self.n_training)), None

    def sample_features(self, images: np.ndarray) -> np.ndarray:
        return self.features(images)

    def distances(self, features: np.ndarray, sample_features: np.ndarray) -> np.ndarray:
        return exact_distances(features, sample_features, self.metric, self.p)


class _IDMReferences:
    """The training set of an :class:`IDMClassifier`; samples are measured with its final
    distance (the IDM, or stage 1's euclidean distance without re-ranking)."""

    def __init__(self, idm: IDMClassifier) -> None:
        self.idm = idm
        self.n_neighbors, self.weights = idm.n_neighbors, idm.weights
        self.labels = idm._y
        self.n_training = len(idm._y)
        self.max_k = idm.n_candidates if idm.rerank else self.n_training

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images)  # the classifier's own search starts from the images

    def search(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, None]:
        return *self.idm.kneighbors(images, n_neighbors=min(k, self.max_k)), None

    def sample_features(self, images: np.ndarray) -> np.ndarray:
        """What the final distance compares: IDM feature planes, or stage 1's projections
        when there is no re-ranking. Samples keep theirs; queries get theirs per search."""
        idm = self.idm
        upright = idm._upright(as_images(images))
        if not idm.rerank:
            return idm._project(idm._stage1_pixels(upright))
        return idm_features(upright, idm.idm_blur)

    def distances(self, images: np.ndarray, sample_features: np.ndarray) -> np.ndarray:
        queries = self.sample_features(images)
        if not self.idm.rerank:
            return exact_distances(queries, sample_features, "euclidean")
        n_samples = len(sample_features)
        pairs = np.broadcast_to(np.arange(n_samples), (len(queries), n_samples))
        return idm_pairs(queries, sample_features, pairs, self.idm.warp, self.idm.context)


class _HybridReferences(_IDMReferences):
    """A :class:`HybridClassifier`'s training set: its IDM neighbours and samples are merged
    as for ``knn-idm``, but where no sample is among them the model's own answer (which adds
    the hyperplane distance to the vote) stands."""

    def search(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """The ``k`` IDM-nearest training images and, from the same search, the model's own
        answer: its probabilities, then the nearest training images of the class answered."""
        hybrid, k = self.idm, min(k, self.max_k)
        scores, dist, idx = hybrid._class_scores(hybrid._query_images(images))
        return dist[:, :k], idx[:, :k], hybrid._answer_from(scores, dist, idx, k)


def _references(model: Model) -> _KNNReferences | _IDMReferences | None:
    estimator = model.estimator
    if isinstance(estimator, HybridClassifier):
        return _HybridReferences(estimator)
    if isinstance(estimator, IDMClassifier):
        return _IDMReferences(estimator)
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return _KNNReferences(model, final) if isinstance(final, KNNClassifier) else None


def learns_from_samples(model: Model) -> bool:
    """Whether :class:`PersonalModel` can add stored samples to this model's references:
    kNN and IDM models can."""
    return _references(model) is not None


class PersonalModel(Model):
    """A kNN model whose reference set is its training set plus the stored samples.

    Samples are measured with the model's own final distance (for ``knn-idm``, the IDM).
    For ``knn`` the neighbours are exactly those of a kNN fitted on the training images
    followed by the samples (ties in distance go to the lower index, so to the training
    image). In the vote a sample counts ``sample_weight`` times (default: ``n_neighbors``),
    so one correction among the nearest neighbours outweighs the training images: the same
    or a very similar drawing is read as the user said at once, while a sample far from the
    query changes nothing.
    With ``sample_weight=1`` the probabilities are those of that refitted kNN.

    ``search_context`` is entered around every search; a server uses it to run searches one
    at a time on one thread each (see :mod:`digitrec.apps.web.app`).
    """

    def __init__(
        self,
        model: Model,
        *,
        sample_weight: float | None = None,
        search_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        references = _references(model)
        if references is None:
            raise SampleError(f"a {model.kind} model is not a kNN; samples cannot join it")
        super().__init__(model.kind, model.params, model.estimator, model.info)
        self.base = model
        self.references = references
        self.n_neighbors = references.n_neighbors
        self.sample_weight = float(self.n_neighbors if sample_weight is None else sample_weight)
        self.search_context = search_context
        self._lock = threading.Lock()
        self._samples = self._sample_set([], -1)

    @property
    def n_training(self) -> int:
        return self.references.n_training

    @property
    def n_samples(self) -> int:
        return len(self._samples.ids)

    @property
    def revision(self) -> int:
        """The store revision the samples were last loaded at (-1: never loaded)."""
        return self._samples.revision

    def set_samples(self, samples: list[Sample], revision: int) -> None:
        """Replace the samples (after another process changed the database).

        Samples of digits the model has no class for are left out: they cannot vote, and one
        of them must not stop every prediction (a model trained on a folder with only some
        digits shares the database with models that know them all)."""
        known = set(self.classes.tolist())
        built = self._sample_set([s for s in samples if s.label in known], revision)
        with self._lock:
            self._samples = built

    def add_sample(self, sample: Sample, revision: int) -> None:
        """Append one sample that the store holds from ``revision`` on; only its own features
        are computed. If the store changed otherwise meanwhile, the next :meth:`sync` reloads."""
        one = self._sample_set([sample], revision)
        with self._lock:
            old = self._samples
            self._samples = _SampleSet(
                np.concatenate([old.ids, one.ids]),
                np.concatenate([old.features, one.features]),
                np.concatenate([old.classes, one.classes]),
                np.concatenate([old.images, one.images]),
                self._next_revision(old, revision),
            )

    def remove_sample(self, sample_id: int, revision: int) -> None:
        """Drop a sample that the store lacks from ``revision`` on (see :meth:`add_sample`)."""
        with self._lock:
            old = self._samples
            keep = old.ids != sample_id
            self._samples = _SampleSet(
                old.ids[keep],
                old.features[keep],
                old.classes[keep],
                old.images[keep],
                self._next_revision(old, revision),
            )

    @staticmethod
    def _next_revision(old: _SampleSet, revision: int) -> int:
        # One change on top of what we hold: we are in step. Anything else (another thread or
        # process wrote too) leaves an unknown state, which -1 makes the next sync reload.
        return revision if old.revision == revision - 1 else -1

    def sync(self, store: SampleStore) -> None:
        """Reload the samples if the database changed since they were loaded."""
        revision = store.revision()
        if revision != self.revision:
            self.set_samples(store.all(), revision)

    def _sample_set(self, samples: list[Sample], revision: int) -> _SampleSet:
        h, w = self.input_shape
        if not samples:
            return _SampleSet(
                np.zeros(0, np.int64),
                # One blank image's features, without the image: the right shape.
                self.references.sample_features(np.zeros((1, h, w), np.uint8))[:0],
                np.zeros(0, np.int64),
                np.zeros((0, h, w), np.uint8),
                revision,
            )
        labels = np.array([s.label for s in samples])
        classes = np.searchsorted(self.classes, labels)
        unknown = (classes >= len(self.classes)) | (
            self.classes[np.minimum(classes, len(self.classes) - 1)] != labels
        )
        if unknown.any():
            known = ", ".join(str(c) for c in self.classes)
            raise SampleError(
                f"this model knows the digits {known}; a sample is labelled {labels[unknown][0]}"
            )
        images = tiles_to_model_input(np.stack([s.tile for s in samples]), self.base)
        return _SampleSet(
            np.array([s.id for s in samples], dtype=np.int64),
            self.references.sample_features(images),
            classes.astype(np.int64),
            images,
            revision,
        )

    def _search(
        self, images: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _SampleSet]:
        """Merged neighbours: distances, indices (samples at ``n_training + position``),
        whether each comes from a sample, and the snapshot the positions refer to."""
        return self._search_and_answer(images, k)[0]

    def _search_and_answer(self, images: np.ndarray, k: int) -> tuple[tuple, tuple | None]:
        """:meth:`_search`, and the model's own answer when it gives one (``knn-idm-hknn``:
        its probabilities, and the distances and indices of the training images behind it),
        else None."""
        samples = self._samples
        features = self.references.features(images)
        k = min(k, self.n_training + len(samples.ids))
        with self.search_context():
            distances, indices, answer = self.references.search(features, k)
            if len(samples.ids):
                s_dist = self.references.distances(features, samples.features)
        if len(samples.ids):
            s_idx = np.broadcast_to(np.arange(len(samples.ids)) + self.n_training, s_dist.shape)
            distances = np.concatenate([distances, s_dist], axis=1)
            indices = np.concatenate([indices, s_idx], axis=1)
            order = np.lexsort((indices, distances), axis=1)[:, :k]
            distances = np.take_along_axis(distances, order, axis=1)
            indices = np.take_along_axis(indices, order, axis=1)
        return (distances, indices, indices >= self.n_training, samples), answer

    def neighbors(self, images: np.ndarray, k: int | None = None):
        """Distances and indices of the nearest references; indices past the training set
        are stored samples, in the order they were loaded."""
        distances, indices, _, _ = self._search(images, k or self.n_neighbors)
        return distances, indices

    def nearest(self, images: np.ndarray, k: int | None = None) -> list[list[Neighbor]]:
        """The nearest references of each image, with their labels and pictures."""
        return self._as_neighbors(*self._search(images, k or self.n_neighbors))

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, list[list[Neighbor]]]:
        """:meth:`predict_proba` and :meth:`nearest` from one search: the answer and the
        references that voted for it."""
        proba, found = self._answer(*self._search_and_answer(images, self.n_neighbors))
        return proba, self._as_neighbors(*found)

    def _as_neighbors(self, distances, indices, from_sample, samples) -> list[list[Neighbor]]:
        training = self.base.training_images()
        labels = self.base.training_labels()
        out = []
        for row_d, row_i, row_s in zip(distances, indices, from_sample, strict=True):
            row = []
            for distance, index, is_sample in zip(row_d, row_i, row_s, strict=True):
                if is_sample:
                    j = index - self.n_training
                    row.append(
                        Neighbor(
                            int(self.classes[samples.classes[j]]),
                            float(distance),
                            samples.images[j],
                            int(samples.ids[j]),
                        )
                    )
                else:
                    image = training[index] if training is not None else None
                    row.append(Neighbor(int(labels[index]), float(distance), image, None))
            out.append(row)
        return out

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._answer(*self._search_and_answer(images, self.n_neighbors))[0]

    def _answer(self, found: tuple, answer: tuple | None) -> tuple[np.ndarray, tuple]:
        """The answer and the neighbours behind it: the neighbours' vote, except for a model
        that answers itself (``knn-idm-hknn``), whose answer and neighbours stand wherever
        no sample is among the neighbours."""
        proba = self._vote(*found)
        if answer is None:
            return proba, found
        distances, indices, from_sample, samples = found
        own, own_distances, own_indices = answer
        untouched = ~from_sample.any(axis=1)
        proba[untouched] = own[untouched]
        distances, indices = distances.copy(), indices.copy()
        distances[untouched] = own_distances[untouched]
        indices[untouched] = own_indices[untouched]
        return proba, (distances, indices, from_sample, samples)

    def _vote(self, distances, indices, from_sample, samples) -> np.ndarray:
        classes = np.empty(indices.shape, dtype=np.int64)
        classes[~from_sample] = self.references.labels[indices[~from_sample]]
        classes[from_sample] = samples.classes[indices[from_sample] - self.n_training]
        weight = np.where(from_sample, self.sample_weight, 1.0)
        return weighted_vote(
            classes, distances, weight, len(self.classes), self.references.weights
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(images), axis=1)]


def weighted_vote(
    neighbor_classes: np.ndarray,
    distances: np.ndarray,
    neighbor_weights: np.ndarray,
    n_classes: int,
    weights: str,
) -> np.ndarray:
    """Class probabilities as :func:`digitrec.neighbors.knn.vote` gives them, each neighbour's
    vote also multiplied by its own weight."""
    return vote(neighbor_classes, distances, n_classes, weights, neighbor_weights)


def exact_distances(Q: np.ndarray, S: np.ndarray, metric: str, p: float = 2.0) -> np.ndarray:
    """``(len(Q), len(S))`` float64 distances, computed as the exact pass
    of :mod:`digitrec.neighbors.search` computes them (``metric`` as :func:`canonical_metric`
    gives it).

    Brute force: the sample set is small, and building a :class:`NeighborIndex` (a principal
    component fit over all features) would cost far more than searching it.
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
