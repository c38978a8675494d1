"""A neighbour model that includes the user's stored samples at once.

:class:`PersonalModel` wraps a trained kNN model (``knn``, ``knn-idm`` or ``knn-idm-hknn``)
and adds the stored samples (:mod:`digitrec.persistence.sample_db`) to its reference set
without refitting it: the samples live in second reference sets, one per owner (the shared
set, and each user's own), and the neighbour lists are merged by distance. A user's answers
include the shared set and that user's samples, never another user's
(:meth:`PersonalModel.for_owner`). Adding or deleting a sample touches only its owner's set,
so it costs milliseconds however large the training set is.

The cost of a prediction does not grow with the number of samples: each set keeps an exact
search index (:class:`~digitrec.neighbors.search.NeighborIndex`) on the samples' features by
the model's shortlist metric (:meth:`~digitrec.neighbors.protocol.ReferenceClassifier.
shortlist_metric`), plus up to ``_TAIL`` samples added since it was built, searched one by
one; only the few samples it shortlists are measured by the model's final distance. For
``knn`` the shortlist metric is the final distance, so the answer is exact.

Indexes are built in the background (seconds for a user's 10,000 samples): until one is
ready, the samples it will hold are searched one by one, by the same exact distances, so
the answer is the same and no prediction waits for a build.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from digitrec.explanation import (
    Explanation,
    Reference,
    distance_meaning,
    explain_references,
    vote_explanation,
)
from digitrec.models import Model
from digitrec.neighbors.knn import vote, vote_weights
from digitrec.neighbors.protocol import Neighbor, ReferenceClassifier
from digitrec.neighbors.search import NeighborIndex, exact_distances
from digitrec.persistence.sample_db import SHARED, Sample, SampleError, SampleStore
from digitrec.reading.recognize import tiles_to_model_input

# Samples added (or deleted) since a set's index was built that are searched one by one;
# past this the index is rebuilt in the background, so its cost (several seconds for 10,000
# IDM samples) is paid once per _TAIL changes.
_TAIL = 256
# Numbers the row orders of sample sets: an index built for one order fits only it.
_generations = itertools.count()
# Samples measured by the final distance per query and set: at least this many, and never
# fewer than 2k + 8 (the exact search's own first pass).
_SHORTLIST = 16


@dataclass(frozen=True)
class _SampleSet:
    """An immutable snapshot of one owner's samples in model-feature form; replaced, never
    edited, so a search in progress keeps a consistent set while another thread adds one.

    Rows ``[0, n_indexed)`` are in ``index``; later rows (at most ``_TAIL``, more while a
    new index is being built) are searched one by one; deleted rows stay until the next
    rebuild, marked in ``alive``. Adding and deleting keep ``generation``; anything that
    renumbers the rows gets a new one."""

    ids: np.ndarray  # (n,) int64 sample ids
    features: np.ndarray  # (n, ...) what the model's final distance compares
    classes: np.ndarray  # (n,) class index of each sample's label
    images: np.ndarray  # (n, h, w) model-input images, for explanations
    alive: np.ndarray  # (n,) bool: False for deleted samples
    revision: int
    generation: int
    index: NeighborIndex | None = None
    n_indexed: int = 0

    @property
    def n_alive(self) -> int:
        return int(self.alive.sum())

    @property
    def vectors(self) -> np.ndarray:
        return self.features.reshape(len(self.features), -1)


def _tail_distances(
    queries: np.ndarray, tail: np.ndarray, alive: np.ndarray, metric: str, p: float, c: int
) -> np.ndarray:
    """``(len(queries), len(tail))`` distances by ``metric`` to the alive rows of ``tail``
    that may be among each query's ``c`` nearest, as :func:`exact_distances` gives them,
    and inf for the others.

    Past ``_TAIL`` rows (a set waiting for its index) euclidean distances are first
    estimated from one matrix product, which rules out the rows whose estimate exceeds the
    c-th smallest by more than its rounding error can explain; only the rest (a few dozen)
    are measured exactly. The answer is the brute force's, at a fraction of its cost."""
    n_alive = int(alive.sum())
    if metric != "euclidean" or len(tail) <= _TAIL or n_alive <= c:
        return np.where(alive, exact_distances(queries, tail, metric, p), np.inf)
    dtype = np.result_type(tail.dtype, np.float32)
    q = np.asarray(queries, dtype=dtype)
    s = np.asarray(tail, dtype=dtype)
    q_sq = np.einsum("ij,ij->i", q, q).astype(np.float64)[:, None]
    s_sq = np.einsum("ij,ij->i", s, s).astype(np.float64)[None, :]
    estimate = q_sq + s_sq - 2.0 * (q @ s.T)
    # A sum of n products in floating point is off by at most n * eps times the sum of
    # their magnitudes: n * eps * |q| |s| for the dot product (Cauchy-Schwarz), n * eps * |s|^2
    # for a norm, and 2 |q| |s| <= |q|^2 + |s|^2; so the estimate is off by at most
    # 2 * n * eps * (|q|^2 + |s|^2), and a factor 8 leaves room for the queries' rounding.
    slack = 8 * tail.shape[1] * np.finfo(dtype).eps * (q_sq + s_sq)
    upper = np.where(alive, estimate + slack, np.inf)
    cutoff = np.partition(upper, c - 1, axis=1)[:, c - 1 : c]
    maybe = alive & (estimate - slack <= cutoff)
    columns = np.flatnonzero(maybe.any(axis=0))
    out = np.full(estimate.shape, np.inf)
    exact = exact_distances(queries, tail[columns], metric, p)
    out[:, columns] = np.where(maybe[:, columns], exact, np.inf)
    return out


@dataclass(frozen=True)
class _Found:
    """The samples shortlisted for one search (from every set searched), in the order their
    positions number them."""

    ids: np.ndarray
    classes: np.ndarray
    images: np.ndarray
    rows: np.ndarray  # the row of each in the sets searched, one after the other


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

    The model answers with the shared set; :meth:`for_owner` gives the same model answering
    with the shared set and one user's samples. The sets of the ``max_owners`` users used
    last are kept in memory; others are loaded again by :meth:`sync` when next needed.

    ``search_context`` is entered around every search; a server uses it to run searches one
    at a time on one thread each (see :mod:`digitrec.apps.web.app`). Indexes are built on
    ``index_executor`` (by default a thread of this model's own); :meth:`wait_for_indexes`
    waits for the builds under way.
    """

    def __init__(
        self,
        model: Model,
        *,
        sample_weight: float | None = None,
        search_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        max_owners: int = 32,
        index_executor: Executor | None = None,
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
        self.max_owners = max_owners
        self.owner = SHARED
        self._lock = threading.Lock()
        # Views made by for_owner share these: one cache of sets for every user, and one
        # build at a time per user.
        self._sets: OrderedDict[str, _SampleSet] = OrderedDict()
        self._builds: dict[str, Future] = {}
        self._index_executor = index_executor or ThreadPoolExecutor(1, "digitrec-index")
        self._sets[SHARED] = self._sample_set([], -1)

    def for_owner(self, owner: str) -> PersonalModel:
        """This model answering with the shared set and ``owner``'s samples (a view: the
        sets are shared with this model)."""
        view = copy.copy(self)
        view.owner = owner
        return view

    @property
    def n_training(self) -> int:
        return self.references.n_training

    @property
    def n_samples(self) -> int:
        """Samples of the shared set in use."""
        return self._set(SHARED).n_alive

    def n_samples_of(self, owner: str) -> int:
        """Samples of ``owner`` in use (0 if they are not loaded)."""
        found = self._set(owner)
        return 0 if found is None else found.n_alive

    @property
    def revision(self) -> int:
        """The store revision the shared set was last loaded at (-1: never loaded)."""
        return self._set(SHARED).revision

    def revision_of(self, owner: str) -> int:
        """The store revision ``owner``'s samples were loaded at (-1: not loaded)."""
        found = self._set(owner)
        return -1 if found is None else found.revision

    def _set(self, owner: str) -> _SampleSet | None:
        with self._lock:
            found = self._sets.get(owner)
            if found is not None:
                self._sets.move_to_end(owner)
            return found

    def _put(self, owner: str, samples: _SampleSet) -> None:
        with self._lock:
            self._sets[owner] = samples
            self._sets.move_to_end(owner)
            while len(self._sets) > self.max_owners + 1:
                oldest = next(o for o in self._sets if o != SHARED)
                del self._sets[oldest]

    def set_samples(self, samples: list[Sample], revision: int, owner: str = SHARED) -> None:
        """Replace ``owner``'s samples (after another process changed the database).

        Samples of digits the model has no class for are left out: they cannot vote, and one
        of them must not stop every prediction (a model trained on a folder with only some
        digits shares the database with models that know them all)."""
        known = set(self.classes.tolist())
        built = self._sample_set([s for s in samples if s.label in known], revision)
        self._put(owner, self._compacted(built))
        self._build_if_needed(owner)

    def add_sample(self, sample: Sample, revision: int) -> None:
        """Append one sample that the store holds from ``revision`` (of its owner) on; only
        its own features are computed. If the store changed otherwise meanwhile, the next
        :meth:`sync` reloads. A user whose samples are not loaded is left to :meth:`sync`."""
        one = self._sample_set([sample], revision)
        with self._lock:
            old = self._sets.get(sample.owner)
            if old is None:
                return
            grown = replace(
                old,
                ids=np.concatenate([old.ids, one.ids]),
                features=np.concatenate([old.features, one.features]),
                classes=np.concatenate([old.classes, one.classes]),
                images=np.concatenate([old.images, one.images]),
                alive=np.concatenate([old.alive, one.alive]),
                revision=self._next_revision(old, revision),
            )
        self._put(sample.owner, self._compacted(grown))
        self._build_if_needed(sample.owner)

    def remove_sample(self, sample_id: int, revision: int, owner: str = SHARED) -> None:
        """Drop a sample that the store lacks from ``revision`` on (see :meth:`add_sample`)."""
        with self._lock:
            old = self._sets.get(owner)
            if old is None:
                return
            shrunk = replace(
                old,
                alive=old.alive & (old.ids != sample_id),
                revision=self._next_revision(old, revision),
            )
        self._put(owner, self._compacted(shrunk))
        self._build_if_needed(owner)

    @staticmethod
    def _next_revision(old: _SampleSet, revision: int) -> int:
        # One change on top of what we hold: we are in step. Anything else (another thread or
        # process wrote too) leaves an unknown state, which -1 makes the next sync reload.
        return revision if old.revision == revision - 1 else -1

    def sync(self, store: SampleStore, owner: str | None = None) -> None:
        """Reload the shared set, and ``owner``'s samples if given (by default this model's
        owner), if the database changed since they were loaded."""
        owners = list(dict.fromkeys([SHARED, self.owner if owner is None else owner]))
        for name, revision in store.revisions(owners).items():
            if revision != self.revision_of(name):
                self.set_samples(store.all(name), revision, name)

    def _sample_set(self, samples: list[Sample], revision: int) -> _SampleSet:
        h, w = self.input_shape
        if not samples:
            return _SampleSet(
                np.zeros(0, np.int64),
                # One blank image's features, without the image: the right shape.
                self.references.sample_features(np.zeros((1, h, w), np.uint8))[:0],
                np.zeros(0, np.int64),
                np.zeros((0, h, w), np.uint8),
                np.zeros(0, bool),
                revision,
                next(_generations),
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
            np.ones(len(samples), bool),
            revision,
            next(_generations),
        )

    @staticmethod
    def _needs_rebuild(samples: _SampleSet) -> bool:
        """Whether the rows outside the index (new or deleted) are too many to keep."""
        outside = len(samples.ids) - samples.n_indexed
        deleted = len(samples.ids) - samples.n_alive
        # Without an index, dropping deleted rows costs no more than keeping them.
        return outside > _TAIL or deleted > _TAIL or (samples.index is None and deleted > 0)

    @staticmethod
    def _without_deleted(samples: _SampleSet) -> _SampleSet:
        keep = samples.alive
        return replace(
            samples,
            ids=samples.ids[keep],
            features=samples.features[keep],
            classes=samples.classes[keep],
            images=samples.images[keep],
            alive=np.ones(int(keep.sum()), bool),
            generation=next(_generations),
            index=None,
            n_indexed=0,
        )

    def _compacted(self, samples: _SampleSet) -> _SampleSet:
        """``samples``, without their deleted rows when so few remain that they need no
        index (cheap, so done at once); larger sets wait for :meth:`_build_if_needed`."""
        if self._needs_rebuild(samples) and samples.n_alive <= _TAIL:
            return self._without_deleted(samples)
        return samples

    def _build_if_needed(self, owner: str) -> None:
        """Start building ``owner``'s index in the background if the set needs one and no
        build is under way (the build under way starts the next one when it ends)."""
        with self._lock:
            self._start_build(owner)

    def _start_build(self, owner: str) -> None:
        # Called with the lock held, so a finished build hands over to the next atomically
        # and wait_for_indexes never sees a gap between the two.
        samples = self._sets.get(owner)
        if owner in self._builds or samples is None or not self._needs_rebuild(samples):
            return
        self._builds[owner] = self._index_executor.submit(self._build, owner, samples)

    def _build(self, owner: str, snapshot: _SampleSet) -> None:
        try:
            indexed = self._without_deleted(snapshot)
            if len(indexed.ids) > _TAIL:
                metric, p = self.references.classifier.shortlist_metric()
                index = NeighborIndex(indexed.vectors, metric, p)
                indexed = replace(indexed, index=index, n_indexed=len(indexed.ids))
            with self._lock:
                current = self._sets.get(owner)
                # A set reloaded meanwhile has other rows: its own build follows this one.
                if current is not None and current.generation == snapshot.generation:
                    self._sets[owner] = self._caught_up(indexed, snapshot, current)
        finally:
            with self._lock:
                del self._builds[owner]
                self._start_build(owner)

    @staticmethod
    def _caught_up(indexed: _SampleSet, snapshot: _SampleSet, current: _SampleSet) -> _SampleSet:
        """``indexed`` (built from ``snapshot``) with what ``current`` changed since: the
        samples added after the snapshot, and the deletions of the snapshot's rows."""
        n = len(snapshot.ids)
        added = slice(n, None)
        return replace(
            indexed,
            ids=np.concatenate([indexed.ids, current.ids[added]]),
            features=np.concatenate([indexed.features, current.features[added]]),
            classes=np.concatenate([indexed.classes, current.classes[added]]),
            images=np.concatenate([indexed.images, current.images[added]]),
            alive=np.concatenate([current.alive[:n][snapshot.alive], current.alive[added]]),
            revision=current.revision,
        )

    def wait_for_indexes(self) -> None:
        """Return when the index builds under way (and those they start) have ended."""
        while True:
            with self._lock:
                builds = list(self._builds.values())
            if not builds:
                return
            wait(builds)

    def unindexed(self, owner: str = SHARED) -> int:
        """Rows of ``owner``'s samples searched one by one (0 if they are not loaded)."""
        found = self._set(owner)
        return 0 if found is None else len(found.ids) - found.n_indexed

    def _owner_sets(self) -> list[_SampleSet]:
        owners = [SHARED] if self.owner == SHARED else [SHARED, self.owner]
        found = [self._set(owner) for owner in owners]
        return [s for s in found if s is not None and s.n_alive]

    def _shortlist(self, queries: np.ndarray, samples: _SampleSet, k: int) -> np.ndarray:
        """``(len(queries), c)`` rows of ``samples`` worth measuring for each query, in
        row order: the ``c`` nearest by the shortlist metric (all of them if few)."""
        c = min(max(_SHORTLIST, 2 * k + 8), samples.n_alive)
        alive_rows = np.flatnonzero(samples.alive)
        if len(alive_rows) <= c:
            return np.broadcast_to(alive_rows, (len(queries), len(alive_rows)))
        metric, p = self.references.classifier.shortlist_metric()
        vectors = samples.vectors
        parts_d, parts_i = [], []
        if samples.index is not None:
            dead = samples.n_indexed - int(samples.alive[: samples.n_indexed].sum())
            d, i = samples.index.query(queries, min(samples.n_indexed, c + dead))
            parts_d.append(np.where(samples.alive[i], d, np.inf))
            parts_i.append(i)
        tail = np.arange(samples.n_indexed, len(samples.ids))
        if len(tail):
            alive = samples.alive[samples.n_indexed :]
            d = _tail_distances(queries, vectors[samples.n_indexed :], alive, metric, p, c)
            parts_d.append(d)
            parts_i.append(np.broadcast_to(tail, d.shape))
        distances, rows = np.concatenate(parts_d, axis=1), np.concatenate(parts_i, axis=1)
        best = np.lexsort((rows, distances), axis=1)[:, :c]
        return np.sort(np.take_along_axis(rows, best, axis=1), axis=1)

    def _nearest_samples(
        self, features: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, _Found] | None:
        """Final distances to the shortlisted samples of every set this model answers with,
        their positions in the :class:`_Found` returned, or None when there are none."""
        sets = self._owner_sets()
        if not sets:
            return None
        classifier = self.references.classifier
        queries = classifier.reference_features(features)
        queries = queries.reshape(len(queries), -1)
        n = len(features)
        distances, positions, ids, classes, images, all_rows = [], [], [], [], [], []
        offset = first_row = 0
        for samples in sets:
            rows = self._shortlist(queries, samples, k)
            if len(rows) and (rows == rows[0]).all():  # the same rows for every query
                d = classifier.distances_to(features, samples.features[rows[0]])
            else:
                d = np.concatenate(
                    [
                        classifier.distances_to(features[i : i + 1], samples.features[rows[i]])
                        for i in range(n)
                    ]
                )
            width = rows.shape[1]
            distances.append(d)
            positions.append(offset + np.arange(n * width).reshape(n, width))
            flat = rows.reshape(-1)
            ids.append(samples.ids[flat])
            classes.append(samples.classes[flat])
            images.append(samples.images[flat])
            all_rows.append(first_row + flat)
            offset += n * width
            first_row += len(samples.ids)
        found = _Found(
            np.concatenate(ids),
            np.concatenate(classes),
            np.concatenate(images),
            np.concatenate(all_rows),
        )
        return np.concatenate(distances, axis=1), np.concatenate(positions, axis=1), found

    def _search(
        self, images: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Found]:
        """Merged neighbours: distances, indices (samples at ``n_training + position``),
        whether each comes from a sample, and the samples the positions refer to."""
        return self._search_and_answer(images, k)[0]

    def _search_and_answer(self, images: np.ndarray, k: int) -> tuple[tuple, tuple]:
        """:meth:`_search`, and the model's own answer from the same search: its
        probabilities, and the distances and indices of the training images behind it."""
        features = self.references.features(images)
        classifier = self.references.classifier
        with self.search_context():
            *answer, distances, indices = classifier.answer_and_nearest(features, k)
            nearest = self._nearest_samples(features, k)
        return self._merge(distances, indices, nearest, k), answer

    def _merge(
        self, distances: np.ndarray, indices: np.ndarray, nearest: tuple | None, k: int
    ) -> tuple:
        """The ``k`` nearest of the training references found and the samples found
        (:meth:`_nearest_samples`), as :meth:`_search` gives them."""
        if nearest is None:
            none = np.zeros(0, np.int64)
            empty = _Found(none, none, np.zeros(0), none)
            return distances, indices, np.zeros(indices.shape, bool), empty
        s_dist, s_pos, found = nearest
        k = min(k, indices.shape[1] + s_dist.shape[1])
        distances = np.concatenate([distances, s_dist], axis=1)
        indices = np.concatenate([indices, s_pos + self.n_training], axis=1)
        # Ties go to the lower index: training images first, then samples in stored order.
        order = np.lexsort((indices, distances), axis=1)[:, :k]
        distances = np.take_along_axis(distances, order, axis=1)
        indices = np.take_along_axis(indices, order, axis=1)
        return distances, indices, indices >= self.n_training, found

    def neighbors(self, images: np.ndarray, k: int | None = None):
        """Distances and indices of the nearest references; indices past the training set
        are stored samples, in the order they were loaded (the shared set's, then the
        owner's; a deleted sample keeps its number until its set is re-indexed)."""
        distances, indices, from_sample, found = self._search(images, k or self.n_neighbors)
        indices = indices.copy()
        indices[from_sample] = self.n_training + found.rows[indices[from_sample] - self.n_training]
        return distances, indices

    def nearest(self, images: np.ndarray, k: int | None = None) -> list[list[Neighbor]]:
        """The nearest references of each image, with their labels and pictures."""
        return self._as_neighbors(*self._search(images, k or self.n_neighbors))

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, list[Explanation]]:
        """:meth:`predict_proba` and, per image, why, from one search: the model's own
        explanation (:mod:`digitrec.explanation`) wherever no sample is among the
        neighbours, else the merged neighbours' vote with each one's weight."""
        k = self.n_neighbors
        features = self.references.features(images)
        classifier = self.references.classifier
        with self.search_context():
            own = explain_references(classifier, features, self.base.training_images(), self.params)
            nearest = self._nearest_samples(features, k)
        found = self._merge(own.distances, own.indices, nearest, k)
        touched = found[2].any(axis=1)
        if not touched.any():
            return own.proba, own.explanations
        proba = own.proba.copy()
        proba[touched] = self._vote(*found)[touched]
        explanations = list(own.explanations)
        distances, _, from_sample, _ = found
        weights = vote_weights(
            distances, self.references.weights, np.where(from_sample, self.sample_weight, 1.0)
        )
        meaning = (
            f"{distance_meaning(classifier, self.params)} A correction you stored counts "
            f"{self.sample_weight:g} times a training image."
        )
        params = {**self.params, "weights": self.references.weights}
        for row in np.flatnonzero(touched):
            refs = self._as_neighbors(*(part[row : row + 1] for part in found[:3]), found[3])[0]
            explanations[row] = vote_explanation(
                [Reference(n.label, n.distance, n.image, n.sample_id) for n in refs],
                weights[row],
                proba[row],
                self.classes,
                meaning,
                params,
            )
        return proba, explanations

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
