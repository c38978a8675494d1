"""Why a model gave its answer, computed from what the model itself used to decide.

One structure, :class:`Explanation`, that the web app's JSON, its page and the HTML report
all render:

- ``knn``: the k neighbours that voted, each with its weight in the vote, and the vote of
  each class (the probabilities the model answers with);
- ``knn-idm``: the neighbours that voted (by IDM distance) and, for each class among the
  IDM's candidates, its nearest training image with its IDM distance;
- ``knn-idm-hknn``: for each class among the candidates (best first), its IDM-nearest
  training image with its IDM distance, its local-hyperplane distance and the score the two
  make, the lowest of which wins;
- any other model (the CNNs): an occlusion map, how much hiding each part of the tile lowers
  the probability of the answer.

Each is made from the same search that gives the answer (:func:`explain_model`), so what it
shows is what decided; a model that answers with its references is used through
:mod:`digitrec.neighbors.protocol` and its public methods only.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from sklearn.pipeline import Pipeline

from digitrec.neighbors.knn import vote, vote_weights

if TYPE_CHECKING:
    from digitrec.models import Model

# Classes shown per answer: the winner and its closest rivals.
TOP_CLASSES = 3
# Occlusion: a blank square this fraction of the tile's side, moved by half its side.
_PATCH_FRACTION = 5 / 28


@dataclass(frozen=True)
class Reference:
    """A training image (or a user's stored sample) that the answer rests on."""

    label: int
    distance: float  # the model's own distance to it (see Explanation.meaning)
    image: np.ndarray | None  # in the model's input shape and value range
    sample_id: int | None = None  # a stored sample; None for a training image
    weight: float | None = None  # its weight in the vote, for models that vote


@dataclass(frozen=True)
class ClassEvidence:
    """What one class had for it: its nearest reference and, by model, its share of the
    vote or its hyperplane distance and score (lower wins)."""

    label: int
    nearest: Reference | None
    vote: float | None = None
    hyperplane: float | None = None
    network: float | None = None  # the network's probability, where the model asks one
    score: float | None = None


@dataclass(frozen=True)
class Explanation:
    """Why ``answer``: one sentence (``summary``), what the numbers mean (``meaning``),
    and the evidence: the references that voted, the classes best first, or a heat map
    (``heat``, the input's shape, 0..1: the drop in the answer's probability when that part
    of the image is hidden)."""

    method: str  # "vote", "hybrid" or "occlusion"
    answer: int
    summary: str
    meaning: str
    voters: list[Reference] = field(default_factory=list)
    classes: list[ClassEvidence] = field(default_factory=list)
    heat: np.ndarray | None = None
    image: np.ndarray | None = None  # the model input under the heat map
    distance_name: str = "distance"  # what the references' distances are called

    @property
    def references(self) -> list[Reference]:
        """The references shown: those that voted, else each top class's nearest."""
        if self.voters:
            return list(self.voters)
        return [c.nearest for c in self.classes if c.nearest is not None]

    def to_json(self, max_value: int) -> dict[str, Any]:
        """The web app's form: images as PNG ``data:`` URLs (``max_value``: the model
        input's largest pixel value)."""

        def ref(r: Reference | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {
                "label": r.label,
                "distance": _round(r.distance),
                "weight": None if r.weight is None else _round(r.weight, 4),
                "sample_id": r.sample_id,
                "image": None if r.image is None else png_data_url(to_grey(r.image, max_value)),
            }

        heatmap = None
        if self.heat is not None and self.image is not None:
            heatmap = png_data_url(heat_overlay(self.image, self.heat, max_value))
        return {
            "method": self.method,
            "answer": self.answer,
            "distance_name": self.distance_name,
            "summary": self.summary,
            "meaning": self.meaning,
            "voters": [ref(r) for r in self.voters],
            "classes": [
                {
                    "label": c.label,
                    "nearest": ref(c.nearest),
                    "vote": None if c.vote is None else _round(c.vote, 4),
                    "hyperplane": None if c.hyperplane is None else _round(c.hyperplane, 4),
                    "score": None if c.score is None else _round(c.score),
                }
                for c in self.classes
            ],
            "heatmap": heatmap,
        }


def _round(value: float, digits: int = 3) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


# --- pictures -------------------------------------------------------------------------------


def to_grey(image: np.ndarray, max_value: int) -> np.ndarray:
    """A model-input image as uint8 0..255 (white ink on black, as the model sees it)."""
    scale = 255.0 / max(int(max_value), 1)
    return np.clip(np.rint(np.asarray(image, np.float64) * scale), 0, 255).astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: np.ndarray, max_value: int) -> np.ndarray:
    """``(h, w, 3)`` uint8: the digit as dark ink on white, the heat in red over it."""
    ink = to_grey(image, max_value).astype(np.float64) / 255.0
    # Scaled by the largest drop, but never by less than 0.05, so that a map of tiny drops
    # (an answer no part of the image can shake) stays pale rather than looks decisive.
    alpha = 0.85 * np.clip(heat / max(float(np.max(heat, initial=0.0)), 0.05), 0, 1)
    base = 1.0 - 0.75 * ink
    red = np.array([0.86, 0.12, 0.10])
    rgb = base[..., None] * (1 - alpha[..., None]) + red * alpha[..., None]
    return np.rint(rgb * 255).astype(np.uint8)


def png_data_url(pixels: np.ndarray) -> str:
    """A uint8 greyscale ``(h, w)`` or RGB ``(h, w, 3)`` array as a PNG ``data:`` URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- what the numbers mean --------------------------------------------------------------------

_METRIC_WORDS = {
    "euclidean": "the euclidean distance of their pixel values",
    "manhattan": "the sum of their pixel differences",
    "cosine": "1 minus the cosine of the angle between their pixel vectors",
}


def _pixel_meaning(params: dict[str, Any]) -> str:
    metric = params.get("metric", "minkowski")
    if metric == "minkowski":
        p = params.get("p", 2)
        metric = {1: "manhattan", 2: "euclidean"}.get(p, f"minkowski p={p}")
    words = _METRIC_WORDS.get(metric, f"the {metric} distance of their pixel values")
    return f"Distance: how different two images are pixel by pixel ({words}); 0 is identical."


def _vote_meaning(params: dict[str, Any]) -> str:
    k = params.get("n_neighbors", 1)
    if params.get("weights", "uniform") == "distance":
        return f"Each of the {k} nearest votes with weight 1/distance (closer counts more)."
    return f"Each of the {k} nearest has one vote."


def _idm_meaning(params: dict[str, Any]) -> str:
    if not params.get("rerank", True):
        return (
            "Distance: how different two deskewed images are (euclidean distance of their "
            "principal components); 0 is identical."
        )
    return (
        "IDM distance (image distortion model): how different the drawing is from a training "
        f"image when every pixel may move up to {params.get('warp', 2)} pixels to its best "
        "match (squared differences of stroke directions, after deskewing); 0 is identical, "
        "lower is closer."
    )


def _hybrid_meaning(params: dict[str, Any]) -> str:
    return (
        _idm_meaning(params)
        + " Hyperplane distance: how far the drawing is from the closest blend of the "
        f"class's {params.get('hyperplane_k', 100)} nearest training images (in wavelet "
        "scattering features); lower is closer. A class's score is its IDM distance + "
        f"{_number(params.get('hyperplane_weight', 150.0))} × its hyperplane distance"
        + _network_meaning(params)
        + "; the lowest score wins."
    )


def _network_meaning(params: dict[str, Any]) -> str:
    weight = params.get("network_weight", 0.0)
    if not weight:
        return ""
    return (
        f" + {_number(weight)} × minus the log of the network's probability of it (network: "
        "the cnn-robust digitrec ships, which learned each digit's shape from all of MNIST)"
    )


def distance_meaning(classifier: Any, params: dict[str, Any]) -> str:
    """What a reference classifier's final distance means, in words."""
    from digitrec.neighbors.idm import IDMClassifier

    params = {**params, **classifier.get_params(deep=False)}
    if isinstance(classifier, IDMClassifier):
        return _idm_meaning(params)
    return _pixel_meaning(params)


def _distance_name(params: dict[str, Any]) -> str:
    """The name of the final distance: IDM distance for the models re-ranked by it (they
    have a ``warp``), else distance."""
    return "IDM distance" if "warp" in params and params.get("rerank", True) else "distance"


def _number(value: float) -> str:
    """A distance as people read it: whole numbers when large, 3 significant digits else."""
    value = float(value)
    if not np.isfinite(value):
        return "none"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


# --- computing them ---------------------------------------------------------------------------


@dataclass
class ReferenceAnswer:
    """What a model answering with its references decided, from one search: the
    probabilities, one explanation per query, and the ``n_neighbors`` nearest references by
    the model's final distance (``distances`` and ``indices``, sorted), which a model adding
    stored samples merges with its own (:mod:`digitrec.neighbors.personal`)."""

    proba: np.ndarray
    explanations: list[Explanation]
    distances: np.ndarray
    indices: np.ndarray


def explain_model(model: Model, images: np.ndarray) -> tuple[np.ndarray, list[Explanation]]:
    """The probabilities of a :class:`~digitrec.models.Model` for ``images`` (model input)
    and, per image, the explanation of its answer, from the same computation."""
    from digitrec.neighbors.protocol import ReferenceClassifier

    estimator = model.estimator
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if isinstance(final, ReferenceClassifier):
        features = estimator[:-1].transform(images) if isinstance(estimator, Pipeline) else images
        found = explain_references(final, features, model.training_images(), model.params)
        return found.proba, found.explanations
    return occlusion(model, images)


def explain_references(
    classifier: Any,
    features: np.ndarray,
    training_images: np.ndarray | None,
    params: dict[str, Any],
) -> ReferenceAnswer:
    """:func:`explain_model` for a reference classifier (:mod:`digitrec.neighbors.protocol`)
    given the features it takes; ``training_images`` (or None) are shown for its references."""
    from digitrec.neighbors.hybrid import HybridClassifier
    from digitrec.neighbors.idm import IDMClassifier

    params = {**params, **classifier.get_params(deep=False)}
    if isinstance(classifier, HybridClassifier):
        return _hybrid(classifier, features, training_images, params)
    labels = classifier.classes_[classifier.reference_classes()]
    if isinstance(classifier, IDMClassifier):
        # One search: the vote is over the first n_neighbors of the sorted candidates.
        k = classifier.n_neighbors
        searched = classifier.n_candidates if classifier.rerank else min(len(labels), max(50, k))
        distances, indices = classifier.kneighbors(features, searched)
        meaning = _idm_meaning(params)
    else:
        distances, indices = classifier.answer(features)[1:]
        meaning = _pixel_meaning(params)
        k = classifier.n_neighbors
    proba = vote(
        classifier.reference_classes()[indices[:, :k]],
        distances[:, :k],
        len(classifier.classes_),
        classifier.weights,
    )
    explanations = []
    for row in range(len(indices)):
        refs = [
            Reference(int(labels[j]), float(d), _picture(training_images, j))
            for d, j in zip(distances[row], indices[row], strict=True)
        ]
        weights = vote_weights(distances[row : row + 1, :k], classifier.weights)[0]
        explanations.append(
            vote_explanation(
                refs[:k], weights, proba[row], classifier.classes_, meaning, params, refs[k:]
            )
        )
    return ReferenceAnswer(proba, explanations, distances[:, :k], indices[:, :k])


def _picture(images: np.ndarray | None, index: int) -> np.ndarray | None:
    return None if images is None else images[index]


def vote_explanation(
    voters: list[Reference],
    weights: np.ndarray,
    proba: np.ndarray,
    classes: np.ndarray,
    meaning: str,
    params: dict[str, Any],
    others: list[Reference] = (),
) -> Explanation:
    """The explanation of a vote: ``voters`` with their ``weights``, the vote ``proba`` of
    every class; ``others`` are further references searched (the nearest of classes that
    got no vote)."""
    voters = [
        Reference(r.label, r.distance, r.image, r.sample_id, float(w))
        for r, w in zip(voters, weights, strict=True)
    ]
    answer = int(classes[int(np.argmax(proba))])
    nearest: dict[int, Reference] = {}
    for r in [*voters, *others]:
        if r.label not in nearest or r.distance < nearest[r.label].distance:
            nearest[r.label] = r
    voted = {int(c): float(p) for c, p in zip(classes, proba, strict=True) if p > 0}
    ranked = sorted(
        set(voted) | set(nearest),
        key=lambda c: (-voted.get(c, 0.0), nearest[c].distance if c in nearest else np.inf),
    )
    evidence = [ClassEvidence(c, nearest.get(c), voted.get(c, 0.0)) for c in ranked[:TOP_CLASSES]]
    k = len(voters)
    won = sum(1 for r in voters if r.label == answer)
    if params.get("weights", "uniform") == "distance":
        summary = f"{answer}: {voted.get(answer, 0):.0%} of the vote, weighted by closeness"
    else:
        summary = f"{answer}: {won} of the {k} nearest vote for it"
    rival = next((c for c in evidence if c.label != answer), None)
    rivals = () if rival is None else (rival.label,)
    if rival is not None and rival.vote:
        summary += f"; next best {rival.label} with {rival.vote:.0%} of the vote"
    name = _distance_name(params)
    closest = [c for c in evidence if c.nearest is not None and c.label in (answer, *rivals)]
    closest.sort(key=lambda c: c.nearest.distance)
    if closest:
        summary += ". Nearest " + "; nearest ".join(
            f"{c.label} at {name} {_number(c.nearest.distance)}" for c in closest
        )
    samples = sum(1 for r in voters if r.sample_id is not None)
    if samples:
        summary += f". Corrections stored as samples among them: {samples}"
    return Explanation(
        "vote",
        answer,
        summary + ".",
        f"{meaning} {_vote_meaning(params)}",
        voters,
        evidence,
        distance_name=name,
    )


def _hybrid(
    classifier: Any, features: np.ndarray, training_images: np.ndarray | None, params: dict
) -> ReferenceAnswer:
    proba, parts = classifier.score_parts(features)
    scores = classifier.combine(parts)
    asks_network = classifier.network_ is not None
    # The network's term is in the meaning only where the model asks it.
    params = {**params, "network_weight": classifier.network_weight if asks_network else 0.0}
    labels = classifier.reference_classes()
    classes = classifier.classes_
    meaning = _hybrid_meaning(params)
    explanations = []
    for row in range(len(scores)):
        ranked = [
            int(c) for c in np.argsort(scores[row], kind="stable") if np.isfinite(scores[row, c])
        ]
        evidence = []
        for c in ranked[:TOP_CLASSES]:
            j = int(parts.indices[row][labels[parts.indices[row]] == c][0])  # candidates are sorted
            ref = Reference(
                int(classes[c]), float(parts.idm_nearest[row, c]), _picture(training_images, j)
            )
            evidence.append(
                ClassEvidence(
                    int(classes[c]),
                    ref,
                    hyperplane=float(parts.hyperplane[row, c]),
                    network=float(np.exp(-parts.network[row, c])) if asks_network else None,
                    score=float(scores[row, c]),
                )
            )
        explanations.append(
            Explanation(
                "hybrid",
                evidence[0].label,
                _hybrid_summary(evidence, params),
                meaning,
                [],
                evidence,
                distance_name="IDM distance",
            )
        )
    k = classifier.n_neighbors
    return ReferenceAnswer(proba, explanations, parts.distances[:, :k], parts.indices[:, :k])


def _hybrid_summary(evidence: list[ClassEvidence], params: dict[str, Any]) -> str:
    weight = _number(params.get("hyperplane_weight", 150.0))

    def terms(c: ClassEvidence) -> str:
        network = "" if c.network is None else f", network {c.network:.0%}"
        return (
            f"IDM distance {_number(c.nearest.distance)}, hyperplane distance "
            f"{_number(c.hyperplane)}{network} (score {_number(c.score)})"
        )

    best = evidence[0]
    if len(evidence) == 1:
        return (
            f"{best.label}: {terms(best)}; no other class is among the "
            f"{params.get('n_candidates', 100)} IDM-nearest training images."
        )
    rival = evidence[1]
    text = f"{best.label}: {terms(best)}; next best class {rival.label} at {terms(rival)}"
    if rival.nearest.distance < best.nearest.distance:
        text += (
            f". The nearest image is a {rival.label}, but {best.label}'s hyperplane is "
            f"closer by more than makes up for it (× {weight})"
        )
    return text + "."


def occlusion(model: Model, images: np.ndarray) -> tuple[np.ndarray, list[Explanation]]:
    """Probabilities and occlusion maps: each image again with a blank square over every
    position in turn; a pixel's heat is the mean drop in the answer's probability over the
    squares covering it."""
    images = np.asarray(images)
    proba = model.predict_proba(images)
    h, w = images.shape[1:3]
    side = max(2, round(min(h, w) * _PATCH_FRACTION))
    step = max(1, side // 2)
    corners = [(y, x) for y in range(0, h - side + 1, step) for x in range(0, w - side + 1, step)]
    explanations = []
    for image, row in zip(images, proba, strict=True):
        best = int(np.argmax(row))
        hidden = np.repeat(image[None], len(corners), axis=0)
        for n, (y, x) in enumerate(corners):
            hidden[n, y : y + side, x : x + side] = 0
        drops = np.maximum(row[best] - model.predict_proba(hidden)[:, best], 0.0)
        total = np.zeros((h, w))
        count = np.zeros((h, w))
        for drop, (y, x) in zip(drops, corners, strict=True):
            total[y : y + side, x : x + side] += drop
            count[y : y + side, x : x + side] += 1
        heat = total / np.maximum(count, 1)
        answer = int(model.classes[best])
        runner = np.argsort(-row, kind="stable")[1] if len(row) > 1 else best
        summary = (
            f"{answer} at {row[best]:.0%} (next {int(model.classes[runner])} at "
            f"{row[runner]:.0%}). Hiding the red parts lowers the probability of {answer} most: "
            f"by up to {float(drops.max(initial=0)):.0%}."
        )
        meaning = (
            f"Occlusion map: the image is shown to the model again with a blank {side}×{side} "
            "pixel square at each place in turn; red marks where hiding the ink costs the "
            "answer most, so the parts the model relied on."
        )
        explanations.append(
            Explanation("occlusion", answer, summary, meaning, heat=heat, image=image)
        )
    return proba, explanations
