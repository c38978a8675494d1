"""The model registry: a kind name -> how to build, train, save and load that model.

Every kind builds a scikit-learn estimator that takes uint8 image arrays ``(n, h, w)``.
A trained :class:`Model` carries its estimator and what it was trained on, and is saved as a
model directory (:mod:`digitrec.persistence.model_store`) holding only JSON and numeric arrays.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from digitrec import config
from digitrec import progress as display
from digitrec.data.datasets import Dataset
from digitrec.errors import ModelFileError, ParameterError
from digitrec.neighbors.protocol import ReferenceClassifier
from digitrec.persistence import model_schema, serialize
from digitrec.persistence import model_store as store
from digitrec.validation import check_declared

if TYPE_CHECKING:
    from digitrec.explanation import Explanation


@dataclass(frozen=True)
class ModelKind:
    """One entry of the registry: a builder and the parameters it sets otherwise than the
    classifier's own defaults."""

    name: str
    summary: str
    build: Callable[..., BaseEstimator]
    overrides: dict[str, Any]
    # digitrec's own classifiers: every parameter is recorded, its default read from the
    # classifier (get_params), so the registry cannot drift from it. scikit-learn's: only
    # the overrides, as its other parameters and their defaults change between versions.
    records_all_params: bool

    @property
    def defaults(self) -> dict[str, Any]:
        """The parameters a model of this kind is built with when none are given."""
        if not self.records_all_params:
            return dict(self.overrides)
        return _classifier(self.build(**self.overrides)).get_params(deep=False)

    @property
    def saved_defaults(self) -> dict[str, Any]:
        """The parameters a model file of this kind has where it names none: a parameter
        newer than the file takes the classifier's own default (the behaviour the file was
        made with), not today's override. digitrec's own classifiers record every
        parameter, so only newer ones are missing."""
        if not self.records_all_params:
            return dict(self.overrides)
        return _classifier(self.build()).get_params(deep=False)


REGISTRY: dict[str, ModelKind] = {}

DEFAULT_KIND = config.DEFAULT_KIND


def register(name: str, summary: str, overrides: dict[str, Any], *, own: bool = True):
    """Decorator: add a builder ``f(**params) -> estimator`` to the registry; ``own`` for
    digitrec's classifiers (see :class:`ModelKind`)."""

    def add(build):
        REGISTRY[name] = ModelKind(name, summary, build, overrides, own)
        return build

    return add


def _classifier(estimator: BaseEstimator) -> BaseEstimator:
    """The last step of a pipeline, or the estimator itself."""
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def flatten_images(images: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` -> ``(n, h*w)``, keeping the dtype (uint8 models stay small on disk)."""
    images = np.asarray(images)
    return images.reshape(len(images), math.prod(images.shape[1:]))  # also for 0 images


def _flatten():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(flatten_images)


@register(
    "knn",
    "k-nearest neighbours on raw pixels, exact search (digitrec.KNNClassifier)",
    {"n_neighbors": 3},
)
def _build_knn(**params):
    from digitrec.neighbors.knn import KNNClassifier

    return Pipeline([("flatten", _flatten()), ("knn", KNNClassifier(**params))])


@register(
    "linear-svc",
    "linear support vector machine on pixels scaled to unit variance (scikit-learn LinearSVC)",
    {"C": 1.0, "max_iter": 1000, "random_state": 0},
    own=False,
)
def _build_linear_svc(**params):
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    # Unit variance without centring: liblinear works on the non-zero pixels only, and
    # centring would make every one of MNIST's mostly-black 784 pixels non-zero (the
    # centred fit had not finished after 8 minutes; this one takes a few).
    scale = StandardScaler(with_mean=False)
    return Pipeline([("flatten", _flatten()), ("scale", scale), ("svc", LinearSVC(**params))])


def kind(name: str) -> ModelKind:
    if name not in REGISTRY:
        raise ParameterError(f"unknown model kind {name!r}: choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["n_neighbors=3", "weights=distance"]`` -> ``{"n_neighbors": 3, ...}``."""
    params = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"parameter {pair!r} is not name=value")
        params[name.strip()] = _parse_value(text.strip())
    return params


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word such as distance or euclidean


def build(
    kind_name: str, params: dict[str, Any] | None = None, *, saved: bool = False
) -> tuple[BaseEstimator, dict]:
    """A fresh estimator of ``kind_name``; unknown parameter names are refused by name.
    ``saved``: ``params`` are a model file's (see :attr:`ModelKind.saved_defaults`)."""
    entry = kind(kind_name)
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"parameters for {kind_name} must be a name -> value mapping")
    defaults = entry.saved_defaults if saved else entry.defaults
    merged = {**defaults, **(params or {})}
    try:
        estimator = entry.build(**merged)
        _validate_steps(estimator)
    except InvalidParameterError as exc:  # a ValueError and a TypeError: catch it first
        raise ParameterError(str(exc)) from exc
    except TypeError as exc:
        allowed = ", ".join(sorted(_allowed_params(entry)))
        raise ParameterError(f"bad parameter for {kind_name}: {exc} (allowed: {allowed})") from exc
    return estimator, merged


def _allowed_params(entry: ModelKind) -> set[str]:
    return set(_classifier(entry.build(**entry.defaults)).get_params(deep=False))


@dataclass
class Model:
    """A trained model: its kind, parameters, estimator, and what it was trained on."""

    kind: str
    params: dict[str, Any]
    estimator: BaseEstimator
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.info["input"]["shape"])

    @property
    def max_value(self) -> int:
        return int(self.info["input"]["max_value"])

    @property
    def classes(self) -> np.ndarray:
        return self.estimator.classes_

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.estimator.predict(images)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities; models without them give one-hot rows."""
        if hasattr(self.estimator, "predict_proba"):
            try:
                return self.estimator.predict_proba(images)
            except AttributeError:
                pass
        predicted = self.estimator.predict(images)
        return (predicted[:, None] == self.classes[None, :]).astype(np.float64)

    def proba_and_distance(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict_proba` and, from the same search, each image's distance to the
        nearest reference of the class answered, in units of the temperature of the softmin
        that makes the probabilities: how unlike every training digit the image is, which
        the probabilities (relative between classes) do not say. The distance is None for
        models that do not answer with references or have no temperature."""
        final = self._final()
        unit = self._temperature()
        if unit is None:
            return self.predict_proba(images), None
        if isinstance(self.estimator, Pipeline):
            images = self.estimator[:-1].transform(images)
        proba, distances, _ = final.answer(images, 1)
        return proba, distances[:, 0] / unit

    def distance_in(self, explanations: list[Explanation]) -> np.ndarray | None:
        """The distance of :meth:`proba_and_distance`, read from :meth:`explain`'s
        explanations of the same images (the answered class's nearest reference), so that
        reading and explaining take one search; None where that method gives None."""
        unit = self._temperature()
        if unit is None:
            return None
        nearest = [
            next((r.distance for r in e.references if r.label == e.answer), None)
            for e in explanations
        ]
        if any(distance is None for distance in nearest):
            return None
        return np.asarray(nearest, np.float64) / unit

    def _temperature(self) -> float | None:
        """The softmin temperature of a model answering with references, else None."""
        final = self._final()
        if not isinstance(final, ReferenceClassifier):
            return None
        # knn-idm-hknn's is a parameter; knn-idm fits its own (None when it votes instead).
        unit = final.get_params().get("temperature") or getattr(final, "temperature_", None)
        return float(unit) if unit else None

    def explain(self, images: np.ndarray) -> tuple[np.ndarray, list[Explanation]]:
        """:meth:`predict_proba` and, per image, why: computed from what the model used to
        decide (:mod:`digitrec.explanation`)."""
        from digitrec.explanation import explain_model

        return explain_model(self, images)

    def _final(self) -> BaseEstimator:
        return _classifier(self.estimator)

    def neighbors(self, images: np.ndarray, k: int | None = None):
        """Distances and training indices of the nearest training images (kNN kinds only)."""
        final = self._final()
        if not hasattr(final, "kneighbors"):
            return None
        if isinstance(self.estimator, Pipeline):
            images = self.estimator[:-1].transform(images)
        return final.kneighbors(images, n_neighbors=k)

    def training_images(self) -> np.ndarray | None:
        """The reference images of a model that answers with its references
        (:mod:`digitrec.neighbors.protocol`), as saved in the model (for explanations); None
        for other models, or where the references are features rather than images."""
        final = self._final()
        if not isinstance(final, ReferenceClassifier):
            return None
        references = final.reference_inputs()
        if references[0].size != int(np.prod(self.input_shape)):
            return None
        return np.asarray(references).reshape(-1, *self.input_shape)

    def training_labels(self) -> np.ndarray | None:
        """The label of every reference image (see :meth:`training_images`)."""
        final = self._final()
        if not isinstance(final, ReferenceClassifier):
            return None
        return final.classes_[final.reference_classes()]


def train(kind_name: str, dataset: Dataset, params: dict[str, Any] | None = None) -> Model:
    """Fit a model of ``kind_name`` on the dataset's training images."""
    estimator, merged = build(kind_name, params)
    _check_counts(merged, len(dataset.y_train))
    start = time.perf_counter()
    try:
        with display.stage(f"fitting {kind_name}"):
            estimator.fit(dataset.X_train, dataset.y_train)
    except InvalidParameterError as exc:
        raise ParameterError(str(exc)) from exc
    seconds = time.perf_counter() - start
    info = {
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "n_train": int(len(dataset.y_train)),
            "n_test": int(len(dataset.y_test)),
        },
        "input": {"shape": list(dataset.image_shape), "max_value": int(dataset.max_value)},
        "fit_seconds": round(seconds, 3),
        "metrics": {},
    }
    return Model(kind_name, merged, estimator, info)


def _check_counts(params: dict[str, Any], n_train: int) -> None:
    """Parameters that count training images cannot exceed them: refused before fitting."""
    for name in model_schema.COUNTS_OF_REFERENCES:
        value = params.get(name)
        if isinstance(value, int) and value > n_train:
            raise ParameterError(
                f"{name}={value} is more than the {n_train} training images; choose 1..{n_train}"
            )


def save(model: Model, directory: Path) -> Path:
    state, arrays = serialize.export_state(model.estimator)
    return store.save(
        directory, store.ModelFile(model.kind, model.params, arrays, state, model.info)
    )


def _validate_steps(estimator: BaseEstimator) -> None:
    """Check parameter values now, before any data: estimators would only check in ``fit``.

    digitrec's estimators that relate several parameters check them in ``check_params``;
    every other step against its declared ``_parameter_constraints``.
    """
    steps = (
        [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    )
    for step in steps:
        check = getattr(step, "check_params", None)
        if check is not None:
            check()
        else:
            check_declared(step)


def load(directory: Path) -> Model:
    """Read, verify and rebuild a saved model; foreign or tampered files are refused.

    The manifest is checked against its kind's schema (shapes, dtypes, sizes, input,
    parameters) and the parameters against the estimator before any array is read; the
    array values (finite, labels in range) before any estimator is filled with them.
    """
    sizes: dict[str, int] = {}
    built: list[BaseEstimator] = []

    def check(manifest: dict[str, Any]) -> None:
        if manifest["kind"] not in REGISTRY:
            raise ModelFileError(f"{directory}: unknown model kind {manifest['kind']!r}")
        sizes.update(model_schema.check_manifest(manifest, str(directory)))
        try:
            built.append(build(manifest["kind"], manifest.get("params", {}), saved=True)[0])
        except (ParameterError, InvalidParameterError) as exc:
            raise ModelFileError(f"{directory}: saved parameters are invalid: {exc}") from exc

    saved = store.load(directory, check=check)
    model_schema.check_arrays(saved.kind, saved.arrays, sizes, str(directory))
    estimator = serialize.import_state(built[0], saved.state, saved.arrays)
    return Model(saved.kind, saved.params, estimator, saved.info)


@register(
    "random-forest",
    "random forest of 100 trees on raw pixels (scikit-learn RandomForestClassifier)",
    {"n_estimators": 100, "n_jobs": -1, "random_state": 0},
    own=False,
)
def _build_random_forest(**params):
    from sklearn.ensemble import RandomForestClassifier

    return Pipeline([("flatten", _flatten()), ("forest", RandomForestClassifier(**params))])


@register(
    "svc-rbf",
    "kernel support vector machine (RBF) on pixels scaled to [0, 1] (scikit-learn SVC); "
    "fit time grows with the square of the training set: use 10,000 images or fewer",
    {"C": 5.0, "gamma": "scale"},
    own=False,
)
def _build_svc_rbf(**params):
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.svm import SVC

    def to_unit_interval(pixels):
        # gamma="scale" adapts to any uniform scaling; this fixes the unit of a numeric gamma.
        return pixels / 255.0

    # probability=False: Platt scaling would cost five extra fits; Model.predict_proba gives
    # one-hot rows for this kind instead.
    return Pipeline(
        [
            ("flatten", _flatten()),
            ("scale", FunctionTransformer(to_unit_interval)),
            ("svc", SVC(kernel="rbf", **params)),
        ]
    )


@register(
    "cnn",
    "small convolutional network, 28x28 images only, needs the cnn extra (digitrec.nets.cnn)",
    {},
)
def _build_cnn(**params):
    from digitrec.nets.cnn import (
        CNNClassifier,  # imports torch only when it trains or loads weights
    )

    return CNNClassifier(**params)


@register(
    "knn-idm",
    "kNN on deskewed digits re-ranked by the image distortion model (digitrec.neighbors.idm)",
    {},
)
def _build_knn_idm(**params):
    from digitrec.neighbors.idm import IDMClassifier

    return IDMClassifier(**params)


@register(
    "knn-idm-hknn",
    "knn-idm's nearest-neighbour distance plus the k-local hyperplane distance on wavelet "
    "scattering features (digitrec.neighbors.hybrid); the most accurate model, and the best reader "
    "of handwriting unlike MNIST's (benchmarks/real_world.py), with the shipped cnn-robust "
    "network's second opinion",
    # Chosen with benchmarks/writer_folds.py's folds (see the README): 0.5 nats of the
    # network per temperature.
    {"network_weight": 75.0},
)
def _build_knn_idm_hknn(**params):
    from digitrec.neighbors.hybrid import HybridClassifier

    return HybridClassifier(**params)


@register(
    "cnn-robust",
    "the cnn trained on MNIST plus elastically distorted, slanted, thickened and thinned "
    "copies (digitrec.nets.robust); needs the cnn extra",
    {},
)
def _build_cnn_robust(**params):
    from digitrec.nets.robust import RobustCNNClassifier  # imports torch only when it trains

    return RobustCNNClassifier(**params)
