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
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from digitrec.models import Model
from digitrec.neighbors.knn import vote
from digitrec.neighbors.protocol import Neighbor, ReferenceClassifier
from digitrec.persistence.sample_db import Sample, SampleError, SampleStore
from digitrec.reading.recognize import tiles_to_model_input


@dataclass(frozen=True)
class _SampleSet:
    """An immutable snapshot of the samples in model-feature form; replaced, never edited,
    so a search in progress keeps a consistent set while another thread adds a sample."""

    ids: np.ndarray  # (n,) int64 sample ids
    features: np.ndarray  # (n, ...) what the model's final distance compares
    classes: np.ndarray  # (n,) class index of each sample's label
    images: np.ndarray  # (n, h, w) model-input images, for explanations
    revision: int


class _References:
    """A model's reference classifier (:mod:`digitrec.neighbors.protocol`) and the steps
    before it: the training references, and how queries and samples are measured."""

    def __init__(self, estimator: BaseEstimator, classifier: ReferenceClassifier) -> None:
        self.head = estimator[:-1] if isinstance(estimator, Pipeline) else None
        self.classifier = classifier
        self.n_neighbors, self.weights = classifier.n_neighbors, classifier.weights
        self.labels = classifier.reference_classes()
        self.n_training = len(self.labels)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Model inputs -> what the classifier takes (a pipeline's features, or the images)."""
        if self.head is None:
            return np.asarray(images)
        return np.asarray(self.head.transform(images), dtype=np.float64)

    def sample_features(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.reference_features(self.features(images))


def _references(model: Model) -> _References | None:
    estimator = model.estimator
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return _References(estimator, final) if isinstance(final, ReferenceClassifier) else None


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

    def _search_and_answer(self, images: np.ndarray, k: int) -> tuple[tuple, tuple]:
        """:meth:`_search`, and the model's own answer from the same search: its
        probabilities, and the distances and indices of the training images behind it."""
        samples = self._samples
        features = self.references.features(images)
        k = min(k, self.n_training + len(samples.ids))
        classifier = self.references.classifier
        with self.search_context():
            *answer, distances, indices = classifier.answer_and_nearest(features, k)
            if len(samples.ids):
                s_dist = classifier.distances_to(features, samples.features)
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

    def _answer(self, found: tuple, answer: tuple) -> tuple[np.ndarray, tuple]:
        """The answer and the neighbours behind it: the model's own wherever no sample is
        among the neighbours (for ``knn`` and ``knn-idm`` that is the same vote of the same
        neighbours; ``knn-idm-hknn`` adds the hyperplane distance), else the vote of the
        merged neighbours."""
        proba = self._vote(*found)
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
        return vote(classes, distances, len(self.classes), self.references.weights, weight)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(images), axis=1)]
