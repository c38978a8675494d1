"""IDM nearest neighbour plus the k-local hyperplane distance on scattering features.

The two distances see a digit differently and err on different images: the image
distortion model (:mod:`digitrec.neighbors.idm`) matches every pixel's gradient context within a
small window, so it forgives local shifts but not a proportion that differs throughout; the
local hyperplane (:mod:`digitrec.neighbors.hyperplane`) interpolates between the nearest training
digits of a class in wavelet scattering space (:mod:`digitrec.features.scattering`), which forgives
smooth deformations of the whole digit. A class's score is

    score(c) = IDM distance to the nearest class-c candidate
               + hyperplane_weight * distance to class c's local hyperplane
               + network_weight * -log(the network's probability of c)

over the classes among the IDM's ``n_candidates`` candidates (1.7 classes on average on
MNIST); the lowest score wins. On the MNIST validation split (train on the first 50,000,
score the last 10,000) the first two terms make 0.9966 of the IDM's 0.9948 and the
hyperplane's 0.9953 alone; see ``benchmarks/accuracy_mnist.py``.

The third term, where ``network_weight`` is not 0, is the second opinion of the
``cnn-robust`` network digitrec ships (:func:`digitrec.nets.onnx_network.shipped`): it
learned each digit's shape from all of MNIST and distorted copies instead of comparing
with single references, and it errs on other digits than the references do.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from digitrec import progress
from digitrec.errors import ModelFileError, ParameterError
from digitrec.features.scattering import ScatteringFeatures
from digitrec.neighbors.calibration import nearest_of_each_class, softmin
from digitrec.neighbors.hyperplane import LocalHyperplanes
from digitrec.neighbors.idm import IDMClassifier
from digitrec.nets.onnx_network import OnnxNetwork, shipped

__all__ = ["HybridClassifier", "ScoreParts", "nearest_of_each_class", "softmin"]

# The network's probabilities are floored here: one confident network must not outweigh
# any IDM and hyperplane distance (-log of it is 13.8 nats).
MIN_NETWORK_PROBABILITY = 1e-6


@dataclass(frozen=True)
class ScoreParts:
    """The terms of :class:`HybridClassifier`'s class scores, ``(n, n_classes)`` each,
    ``inf`` for classes not among the candidates: each class's IDM distance to its nearest
    candidate, its local-hyperplane distance (0 when ``hyperplane_weight`` is 0, as it is
    not computed then), and minus the log of the network's probability of it (0 without a
    network); and the IDM distances and indices of the ``n_candidates`` candidates,
    ``(n, n_candidates)``, sorted."""

    idm_nearest: np.ndarray
    hyperplane: np.ndarray
    network: np.ndarray
    distances: np.ndarray
    indices: np.ndarray


class HybridClassifier(IDMClassifier):
    """:class:`~digitrec.neighbors.idm.IDMClassifier` whose vote adds a local-hyperplane distance.

    Parameters are the IDM classifier's (``n_neighbors`` and ``weights`` only shape
    :meth:`kneighbors`, which still returns the IDM-nearest training images) and:

    hyperplane_weight : IDM units per unit of hyperplane distance.
    hyperplane_k : training images of a class spanning its local hyperplane.
    hyperplane_reg : ridge penalty on the hyperplane coefficients.
    scattering_components : PCA dimensions of the scattering features.
    temperature : IDM units of the softmin that turns scores into ``predict_proba``.
    network_weight : IDM units per nat of the shipped network's log-probability; 0 asks
        no network. Images the network cannot read (other than 28x28 images of the digits
        0-9) are scored without it, and ``network_`` is then None.

    ``predict_proba`` is ``exp(-(score - best score) / temperature)``, normalised over the
    classes among the candidates (the others get 0). The default temperature gave the lowest
    log-loss on the MNIST validation split (0.023; expected calibration error 0.001).
    """

    _parameter_constraints: dict = {
        **IDMClassifier._parameter_constraints,
        "hyperplane_weight": [Interval(Real, 0, None, closed="left")],
        "hyperplane_k": [Interval(Integral, 1, None, closed="left")],
        "hyperplane_reg": [Interval(Real, 0, None, closed="neither")],
        "scattering_components": [Interval(Integral, 1, None, closed="left"), None],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "network_weight": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_neighbors: int = 1,
        weights: str = "uniform",
        n_candidates: int = 100,
        deskew: bool = True,
        blur: float = 0.0,
        n_components: int | None = 40,
        shift: int = 1,
        rerank: bool = True,
        warp: int = 2,
        context: int = 1,
        idm_blur: float = 0.5,
        batch_size: int = 1000,
        random_state: int | None = 0,
        hyperplane_weight: float = 150.0,
        hyperplane_k: int = 100,
        hyperplane_reg: float = 10.0,
        scattering_components: int | None = 300,
        temperature: float = 150.0,
        network_weight: float = 0.0,
    ) -> None:
        super().__init__(
            n_neighbors=n_neighbors,
            weights=weights,
            n_candidates=n_candidates,
            deskew=deskew,
            blur=blur,
            n_components=n_components,
            shift=shift,
            rerank=rerank,
            warp=warp,
            context=context,
            idm_blur=idm_blur,
            batch_size=batch_size,
            random_state=random_state,
        )
        self.hyperplane_weight = hyperplane_weight
        self.hyperplane_k = hyperplane_k
        self.hyperplane_reg = hyperplane_reg
        self.scattering_components = scattering_components
        self.temperature = temperature
        self.network_weight = network_weight

    def check_params(self) -> None:
        """:meth:`IDMClassifier.check_params`, and ``rerank`` must be on."""
        super().check_params()
        if not self.rerank:
            raise ParameterError("rerank must be True: the vote needs the IDM distances")

    def _scattering(self) -> ScatteringFeatures:
        return ScatteringFeatures(n_components=self.scattering_components)

    def fit(self, X: np.ndarray, y: np.ndarray) -> HybridClassifier:
        upright = self._fit(X, y)
        self.scattering_ = self._scattering()
        refs = self.scattering_.fit_transform(upright)
        with progress.stage("hyperplane references"):
            self.hyperplanes_ = LocalHyperplanes(refs, self._y, len(self.classes_))
        # Images the network cannot read are scored without it (see network_weight).
        reads = self.network_weight > 0 and self._network_reads_these()
        self.network_ = shipped() if reads else None
        return self

    def _network_reads_these(self) -> bool:
        """Whether the training images are what the network reads: 28x28 digits 0-9."""
        classes = np.asarray(self.classes_)
        digits = classes.dtype.kind in "iu" and bool(np.isin(classes, np.arange(10)).all())
        return digits and tuple(self.image_shape_) == (28, 28)

    def _class_parts(self, images: np.ndarray) -> ScoreParts:
        """What the class scores are made of (see :class:`ScoreParts`), batch by batch."""
        n_classes = len(self.classes_)
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            # Deskewed once for both distances.
            upright = self._upright(batch)
            dist, idx = self._kneighbors_upright(upright, self.n_candidates)
            nearest = nearest_of_each_class(dist, self._y[idx], n_classes)
            among = np.isfinite(nearest)
            if self.hyperplane_weight > 0:
                hull = self.hyperplanes_.distances(
                    self.scattering_.transform(upright),
                    self.hyperplane_k,
                    self.hyperplane_reg,
                    among,
                )
            else:
                hull = np.where(among, 0.0, np.inf)
            if self.network_ is not None:
                proba = self.network_.predict_proba(batch)[:, self.classes_.astype(np.int64)]
                network = -np.log(np.clip(proba, MIN_NETWORK_PROBABILITY, 1.0))
                network = np.where(among, network, np.inf)
            else:
                network = np.where(among, 0.0, np.inf)
            parts.append((nearest, hull, network, dist, idx))
        if not parts:
            empty = np.empty((0, self.n_candidates))
            none = np.empty((0, n_classes))
            return ScoreParts(none, none, none, empty, empty.astype(np.int64))
        return ScoreParts(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))

    def _class_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n, n_classes)`` scores, lower is better (``inf`` for classes not among the
        candidates), and the IDM distances and indices of the candidates, sorted."""
        parts = self._class_parts(images)
        return self.combine(parts), parts.distances, parts.indices

    def combine(self, parts: ScoreParts, hyperplane_weight: float | None = None) -> np.ndarray:
        """The class scores from their terms, with this model's ``hyperplane_weight`` or the
        one given; ``inf`` for classes not among the candidates."""
        weight = self.hyperplane_weight if hyperplane_weight is None else hyperplane_weight
        with np.errstate(invalid="ignore"):  # 0 * inf for classes not among the candidates
            scores = (
                parts.idm_nearest
                + weight * parts.hyperplane
                + self.network_weight * parts.network
            )
        return np.where(np.isfinite(parts.idm_nearest), scores, np.inf)

    def score_parts(self, X: np.ndarray) -> tuple[np.ndarray, ScoreParts]:
        """What the answer is made of, from one search: :meth:`predict_proba`, and the
        terms of the class scores with the candidates (:class:`ScoreParts`)."""
        parts = self._class_parts(self._query_images(X))
        return softmin(self.combine(parts), self.temperature), parts

    def class_scores(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` scores, lower is better: each class's IDM-nearest candidate
        distance plus ``hyperplane_weight`` times its local-hyperplane distance (``inf`` for
        classes not among the ``n_candidates``)."""
        return self._class_scores(self._query_images(X))[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        images = self._query_images(X)
        return self.classes_[np.argmin(self._class_scores(images)[0], axis=1)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """A softmin of the class scores (see the class docstring)."""
        return self.answer(X)[0]

    def answer(
        self, X: np.ndarray, n_neighbors: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_proba` and the training images behind each answer: like
        :meth:`kneighbors`, but the IDM-nearest candidates of the class answered come first,
        also where the hyperplane distance overruled the single nearest image."""
        images = self._query_images(X)
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if not (isinstance(k, Integral) and 1 <= k <= self.n_candidates):
            raise ParameterError(f"n_neighbors must be an int in 1..{self.n_candidates}, got {k!r}")
        return self._answer_from(*self._class_scores(images), k)

    def answer_and_nearest(
        self, X: np.ndarray, n_neighbors: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`answer`, then the IDM-nearest candidates, from one search."""
        k = min(int(n_neighbors), self.n_candidates)
        scores, dist, idx = self._class_scores(self._query_images(X))
        return *self._answer_from(scores, dist, idx, k), dist[:, :k], idx[:, :k]

    def _answer_from(
        self, scores: np.ndarray, dist: np.ndarray, idx: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        best = np.argmin(scores, axis=1)
        proba = softmin(scores, self.temperature)
        # A stable sort on "not of the answered class" keeps the IDM order within each part.
        order = np.argsort(self._y[idx] != best[:, None], axis=1, kind="stable")[:, :k]
        return proba, np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)

    # -- model store ------------------------------------------------------------------

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        check_is_fitted(self, "hyperplanes_")
        state, arrays = super().export_state()
        scat_state, scat_arrays = self.scattering_.export_state()
        state["scattering"] = scat_state
        arrays |= {f"scattering_{key}": value for key, value in scat_arrays.items()}
        # Saved rather than recomputed on load: scattering 60,000 images takes minutes.
        arrays["scattering_refs"] = self.hyperplanes_.references()
        if self.network_ is not None:
            # The network itself, not a reference to the shipped file: a model answers the
            # same after an upgrade that ships another network.
            arrays["network_onnx"] = np.frombuffer(self.network_.data, np.uint8)
        return state, arrays

    def import_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        super().import_state(state, arrays)
        scattering = self._scattering()
        try:
            scat_arrays = {
                key.removeprefix("scattering_"): value
                for key, value in arrays.items()
                if key.startswith("scattering_") and key != "scattering_refs"
            }
            scattering.import_state(state["scattering"], scat_arrays)
            refs = np.asarray(arrays["scattering_refs"], np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"HybridClassifier state is incomplete: {exc}") from exc
        n_dims = len(scattering.mean_ if scattering.components_ is None else scattering.components_)
        if refs.shape != (len(self._y), n_dims):
            raise ModelFileError("HybridClassifier state: scattering features do not match")
        reads = self.network_weight > 0 and self._network_reads_these()
        if ("network_onnx" in arrays) != reads:
            raise ModelFileError("HybridClassifier state: network and network_weight disagree")
        self.network_ = None
        if reads:
            self.network_ = OnnxNetwork(np.asarray(arrays["network_onnx"], np.uint8).tobytes())
        self.scattering_ = scattering
        self.hyperplanes_ = LocalHyperplanes(refs, self._y, len(self.classes_))
