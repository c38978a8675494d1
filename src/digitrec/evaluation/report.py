"""A model's test results as one self-contained HTML page.

Everything the page shows is inside the file: figures and digit images are PNGs embedded as
base64 ``data:`` URLs, the style sheet is inline, and there is no script, so the page opens
offline, can be mailed, and stays the same when the model or the data move. Every piece of
text that comes from the model or the data goes through :func:`html.escape`.

Each misclassified image is shown with its explanation (:mod:`digitrec.explanation`): what
the model decided on, such as the k neighbours that voted with their weights, or for
``knn-idm-hknn`` each top class's nearest training image with its IDM and hyperplane
distances. For the neighbour models the page also shows the test accuracy of the model itself
against one of its parameters (:func:`parameter_curve`): against k for ``knn`` and ``knn-idm``,
whose answer is the vote of their k nearest; against ``hyperplane_weight`` for
``knn-idm-hknn``, whose answer is the lowest score. Either costs one search whatever the
number of values: the votes for smaller k come from the first columns of the same sorted
neighbour lists, and the scores for other weights from the same two distances.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.pipeline import Pipeline

from digitrec import models
from digitrec import progress as display
from digitrec.data import datasets
from digitrec.errors import DigitrecError
from digitrec.evaluation.metrics import Evaluation, evaluate
from digitrec.explanation import Explanation, heat_overlay, png_data_url
from digitrec.persistence.atomic import atomic_write_text

# Thumbnails are drawn this many CSS pixels wide whatever the image size (8x8 UCI or 28x28).
THUMB_PIXELS = 48
DEFAULT_EXAMPLES = 30
DEFAULT_K_MAX = 20


@dataclass
class Curve:
    """Test accuracy of a model for several values of one of its parameters, the model's
    own value among them, from one search."""

    parameter: str
    values: list[float]
    accuracies: list[float]
    model_value: float
    method: str  # how every value is evaluated, in words


def _final(model: models.Model):
    estimator = model.estimator
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def parameter_curve(
    model: models.Model, images: np.ndarray, labels: np.ndarray, k_max: int = DEFAULT_K_MAX
) -> Curve | None:
    """The model's test accuracy against k (``knn``, ``knn-idm``) or ``hyperplane_weight``
    (``knn-idm-hknn``), each value evaluated as the model with that value answers; None for
    other models."""
    from digitrec.neighbors.hybrid import HybridClassifier
    from digitrec.neighbors.idm import IDMClassifier
    from digitrec.neighbors.knn import KNNClassifier, vote

    final = _final(model)
    if isinstance(final, HybridClassifier):
        return _weight_curve(model, final, images, labels)
    if not isinstance(final, KNNClassifier | IDMClassifier):
        return None
    train_labels = model.training_labels()
    limit = final.n_candidates if isinstance(final, IDMClassifier) and final.rerank else None
    k_max = min(k_max, len(train_labels), limit or len(train_labels))
    distances, indices = model.neighbors(images, k_max)
    # Votes are counted per class index, in the order of model.classes (sorted, as np.unique).
    class_of = np.searchsorted(model.classes, train_labels)[indices]
    rows = np.arange(len(indices))
    accuracies = []
    for k in range(1, k_max + 1):
        scores = vote(class_of[:, :k], distances[:, :k], len(model.classes), final.weights)
        if isinstance(final, IDMClassifier):
            # knn-idm breaks a tie for the nearest neighbour's class, KNNClassifier for the
            # lower class (argmax).
            scores[rows, class_of[:, 0]] += 1e-9
        predicted = model.classes[np.argmax(scores, axis=1)]
        accuracies.append(float(np.mean(predicted == labels)))
    return Curve(
        "k",
        list(range(1, k_max + 1)),
        accuracies,
        final.n_neighbors,
        f"Each k is {model.kind} with n_neighbors=k: the vote of the same sorted neighbour "
        f"lists' first k (one search at k={k_max}, weights={final.weights}).",
    )


HYPERPLANE_WEIGHTS = (0.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0)


def _weight_curve(model, final, images: np.ndarray, labels: np.ndarray) -> Curve:
    """knn-idm-hknn's accuracy for several ``hyperplane_weight``: the lowest score of each
    weight, from one search's terms (0: without the hyperplane)."""
    _, parts = final.score_parts(images)
    weights = sorted({*HYPERPLANE_WEIGHTS, float(final.hyperplane_weight)})
    accuracies = []
    for weight in weights:
        scores = final.combine(parts, weight)
        accuracies.append(float(np.mean(model.classes[np.argmin(scores, axis=1)] == labels)))
    return Curve(
        "hyperplane_weight",
        weights,
        accuracies,
        float(final.hyperplane_weight),
        "Each value is knn-idm-hknn with that hyperplane_weight: a class's score is its IDM "
        "distance + weight × its hyperplane distance (+ the network's term, where the model "
        "asks one), lowest wins (0: without the hyperplane).",
    )


def build_report(
    model: models.Model,
    data: datasets.Dataset,
    model_path: str = "",
    examples: int = DEFAULT_EXAMPLES,
    k_max: int = DEFAULT_K_MAX,
) -> str:
    """The HTML page for ``model`` on ``data``'s test split."""
    from digitrec.evaluation import plots

    if tuple(model.input_shape) != tuple(data.image_shape):
        raise DigitrecError(
            f"the model takes {model.input_shape} images, {data.name} has {data.image_shape}"
        )
    result = evaluate(model, data.X_test, data.y_test, progress=display.showing())
    k_max = max(k_max, int(model.params.get("n_neighbors", 1)))
    with display.stage("accuracy against a parameter"):
        curve = parameter_curve(model, data.X_test, data.y_test, k_max)

    title = f"{model.kind} on {data.name}"
    heatmap = plots.confusion_heatmap(
        result.confusion, result.labels, title=f"{title}: accuracy {result.accuracy:.4f}"
    )
    sections = [
        _headline(model, data, result, model_path),
        _section(
            "Per-class results",
            '<div class="pair">'
            + _scroll(_classification_table(result))
            + _figure(
                heatmap,
                "confusion matrix: rows are the true digit, columns the prediction",
                wide=True,
            )
            + "</div>",
        ),
        _section("Most confused pairs", _confused_pairs(result, data, model.max_value)),
    ]
    if curve is not None:
        figure = plots.accuracy_against_k(
            curve.values, curve.accuracies, curve.model_value, parameter=curve.parameter
        )
        sections.append(
            _section(
                f"Accuracy against {curve.parameter}",
                f"<p>{_e(curve.method)}</p>"
                + '<div class="pair">'
                + _figure(figure, f"test accuracy for each {curve.parameter}")
                + _scroll(_curve_table(curve))
                + "</div>",
            )
        )
    sections.append(_section("Misclassified test images", _gallery(model, data, result, examples)))
    return _page(f"digitrec report: {title}", "\n".join(sections))


def write_report(
    model_dir: Path,
    output: Path,
    dataset: str | None = None,
    test_size: int | None = None,
    seed: int = 0,
    source: str | Path | None = None,
    examples: int = DEFAULT_EXAMPLES,
    k_max: int = DEFAULT_K_MAX,
) -> Path:
    """Load a saved model and its test split (or a subset), write the report atomically."""
    with display.stage("loading the model"):
        model = models.load(model_dir)
    data = datasets.load(dataset or model.info["dataset"]["name"], source)
    if test_size is not None:
        data = data.subset(None, test_size, seed)
    with display.stage("writing the report"):
        page = build_report(model, data, str(model_dir), examples, k_max)
    atomic_write_text(Path(output), page)
    return Path(output)


# --- pieces of the page ---------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _scroll(table: str) -> str:
    """A table in a box of its own that scrolls sideways on a narrow screen."""
    return f'<div class="scroll">{table}</div>'


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>\n{body}\n</section>"


def _headline(model: models.Model, data: datasets.Dataset, result: Evaluation, path: str) -> str:
    errors = int(np.sum(result.y_true != result.y_pred))
    trained = model.info.get("dataset", {})
    tiles = [
        ("accuracy", f"{result.accuracy:.2%}", f"{result.accuracy:.4f}"),
        ("errors", f"{errors:,}", f"of {result.n:,} test images"),
        (
            "predict",
            f"{result.seconds / max(result.n, 1) * 1000:.2f} s",
            "per 1,000 images",
        ),
        ("trained on", f"{trained.get('n_train', 0):,}", f"{trained.get('name', '?')} images"),
        ("fit", f"{model.info.get('fit_seconds', 0):.1f} s", "wall clock"),
    ]
    tile_html = "".join(
        f'<div class="tile"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="sub">{_e(sub)}</div></div>'
        for label, value, sub in tiles
    )
    params = ", ".join(f"{k}={v}" for k, v in model.params.items())
    versions = ", ".join(f"{k} {v}" for k, v in model.info.get("versions", {}).items())
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<header><h1 id="headline">{_e(model.kind)} on {_e(data.name)}: '
        f"{result.accuracy:.2%} accurate</h1>"
        f'<p class="meta">{_e(path)} &middot; parameters: {_e(params or "defaults")}'
        f" &middot; {_e(versions)} &middot; report made {_e(generated)}</p>"
        f'<div class="tiles">{tile_html}</div></header>'
    )


def _classification_table(result: Evaluation) -> str:
    rows = []
    for label, p, r, f, s in zip(
        result.labels, result.precision, result.recall, result.f1, result.support, strict=True
    ):
        rows.append(_tr([label, f"{p:.4f}", f"{r:.4f}", f"{f:.4f}", f"{int(s):,}"]))
    total = int(np.sum(result.support))
    weights = result.support / max(total, 1)
    for name, average in (
        ("macro avg", lambda v: float(np.mean(v))),
        ("weighted avg", lambda v: float(np.sum(v * weights))),
    ):
        rows.append(
            _tr(
                [
                    name,
                    f"{average(result.precision):.4f}",
                    f"{average(result.recall):.4f}",
                    f"{average(result.f1):.4f}",
                    f"{total:,}",
                ],
                css="summary",
            )
        )
    rows.append(_tr(["accuracy", "", "", f"{result.accuracy:.4f}", f"{total:,}"], css="summary"))
    head = _tr(["digit", "precision", "recall", "f1", "support"], cell="th")
    return f'<table class="report"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _tr(cells: list, cell: str = "td", css: str = "") -> str:
    attr = f' class="{css}"' if css else ""
    return f"<tr{attr}>" + "".join(f"<{cell}>{_e(c)}</{cell}>" for c in cells) + "</tr>"


def _confused_pairs(result: Evaluation, data: datasets.Dataset, max_value: int) -> str:
    pairs = result.most_confused(top=8)
    if not pairs:
        return "<p>No mistakes on this test split.</p>"
    rows = []
    for true, predicted, count in pairs:
        where = np.flatnonzero((result.y_true == true) & (result.y_pred == predicted))[:6]
        thumbs = "".join(
            _img(data.X_test[i], max_value, f"test image {i}: true {true}, predicted {predicted}")
            for i in where
        )
        rows.append(
            f"<tr><td class='pairname'>{_e(true)} &rarr; {_e(predicted)}</td>"
            f"<td>{count:,}</td><td class='thumbs'>{thumbs}</td></tr>"
        )
    return _scroll(
        '<table class="confused"><thead><tr><th>true &rarr; predicted</th><th>count</th>'
        f"<th>examples</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _curve_table(curve: Curve) -> str:
    best = int(np.argmax(curve.accuracies))
    rows = []
    for value, accuracy in zip(curve.values, curve.accuracies, strict=True):
        marks = []
        if value == curve.model_value:
            marks.append("model")
        if value == curve.values[best]:
            marks.append("best")
        css = "chosen" if value == curve.model_value else ""
        rows.append(_tr([f"{value:g}", f"{accuracy:.4f}", ", ".join(marks)], css=css))
    head = _tr([curve.parameter, "accuracy", ""], cell="th")
    return f'<table class="ktable"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _gallery(model: models.Model, data: datasets.Dataset, result: Evaluation, examples: int) -> str:
    wrong = np.flatnonzero(result.y_true != result.y_pred)
    if len(wrong) == 0:
        return "<p>No mistakes on this test split.</p>"
    # The most confident mistakes first: they say most about what the model gets wrong.
    proba = model.predict_proba(data.X_test[wrong])
    confidence = proba.max(axis=1)
    order = np.argsort(-confidence, kind="stable")[:examples]
    # Models without probabilities (svc-rbf, linear-svc) give one-hot rows: a "confidence"
    # of 1 for every mistake says nothing, so it is not shown.
    certain = bool(np.all(confidence == 1.0))
    shown_images = wrong[order]
    with display.stage("explaining the mistakes"):
        _, explanations = model.explain(data.X_test[shown_images])
    cards = []
    for position, i, why in zip(order, shown_images, explanations, strict=True):
        true, predicted = result.y_true[i], result.y_pred[i]
        cards.append(
            f'<figure class="card">{_img(data.X_test[i], model.max_value, f"test image {i}", 96)}'
            f"<figcaption><span class='true'>true {_e(true)}</span> "
            f"<span class='pred'>predicted {_e(predicted)}</span>"
            f"<span class='sub'>#{i}"
            + ("" if certain else f" &middot; confidence {confidence[position]:.2f}")
            + "</span>"
            "</figcaption>" + _why(why, int(true), model.max_value) + "</figure>"
        )
    order_note = "in test-set order (no probabilities)" if certain else "most confident first"
    shown = f"{len(order)} of {len(wrong):,}" if len(order) < len(wrong) else f"all {len(wrong)}"
    meaning = f'<p class="sub">{_e(explanations[0].meaning)}</p>' if explanations else ""
    return (
        f"<p>{shown} mistakes, {order_note}, each with why the model answered so.</p>"
        f'{meaning}<div class="gallery">{"".join(cards)}</div>'
    )


def _why(why: Explanation, true: int, max_value: int) -> str:
    """One explanation (:mod:`digitrec.explanation`): its sentence and its evidence."""
    parts = [f'<p class="why">{_e(why.summary)}</p>']
    if why.heat is not None and why.image is not None:
        overlay = png_data_url(heat_overlay(why.image, why.heat, max_value))
        parts.append(
            f'<img class="heat" src="{overlay}" width="96" height="96" '
            f'alt="occlusion map: red where hiding the image lowers {why.answer} most">'
        )
    if why.method == "vote":
        parts.append(
            _references(
                f"the {len(why.voters)} that voted (label &middot; {_e(why.distance_name)} "
                "&middot; weight)",
                [
                    (r, [f"{r.label} &middot; {r.distance:.0f}", f"w {r.weight:.3g}"])
                    for r in why.voters
                ],
                true,
                max_value,
            )
        )
        # A class's nearest is the voter itself when it got a vote.
        voted = {id(r) for r in why.voters}
        others = [c.nearest for c in why.classes if c.nearest and id(c.nearest) not in voted]
        if others:
            parts.append(
                _references(
                    "nearest of the other classes (no vote)",
                    [(r, [f"{r.label} &middot; {r.distance:.0f}"]) for r in others],
                    true,
                    max_value,
                )
            )
    if why.method == "hybrid":
        parts.append(
            _references(
                "each top class's nearest (IDM &middot; hyperplane &middot; score)",
                [
                    (
                        c.nearest,
                        [
                            f"{c.label}: {c.nearest.distance:.0f}",
                            f"h {c.hyperplane:.3g}",
                            f"s {c.score:.0f}",
                        ],
                    )
                    for c in why.classes
                ],
                true,
                max_value,
            )
        )
    return "".join(parts)


def _references(title: str, shown: list, true: int, max_value: int) -> str:
    """Reference thumbnails, each with its lines of (already escaped) text."""
    cells = []
    for reference, lines in shown:
        css = "match" if reference.label == true else "miss"
        picture = (
            "" if reference.image is None else _img(reference.image, max_value, "training image")
        )
        text = "".join(f"<span>{line}</span>" for line in lines)
        cells.append(f'<div class="nb {css}">{picture}{text}</div>')
    return f'<div class="neighbours"><div class="sub">{title}</div>{"".join(cells)}</div>'


# --- images ---------------------------------------------------------------------------------


def _png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(figure, caption: str, wide: bool = False) -> str:
    """A matplotlib figure; a ``wide`` one (the heat map, whose numbers must stay readable)
    keeps a minimum width and scrolls sideways in its own box on a narrow screen."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    css = "chart wide" if wide else "chart"
    return (
        f'<figure class="{css}"><div class="scroll"><img src="{_png_data_url(buffer.getvalue())}" '
        f'alt="{_e(caption)}"></div><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _img(image: np.ndarray, max_value: int, alt: str, side: int = THUMB_PIXELS) -> str:
    """One digit as an embedded PNG: ink dark on white, as the figures draw it."""
    pixels = np.asarray(image, dtype=np.float64) * (255.0 / max(max_value, 1))
    ink = (255 - np.clip(pixels, 0, 255)).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(ink, mode="L").save(buffer, format="PNG", optimize=True)
    return (
        f'<img class="digit" src="{_png_data_url(buffer.getvalue())}" alt="{_e(alt)}" '
        f'title="{_e(alt)}" width="{side}" height="{side}">'
    )


# --- the page -------------------------------------------------------------------------------

_STYLE = """
:root { --ink: #1d2430; --muted: #5b6577; --line: #e3e7ee; --accent: #2f5fa7;
        --bad: #c0392b; --good: #2e7d4f; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 60px; }
header h1 { font-size: 28px; margin: 0 0 6px; overflow-wrap: anywhere; }
.meta { color: var(--muted); font-size: 13px; margin: 0 0 18px; word-break: break-word; }
.tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 10px;
        padding: 12px 18px; min-width: 150px; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.tile .value { font-size: 26px; font-weight: 650; }
.tile .sub, .sub { color: var(--muted); font-size: 12px; display: block; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px;
          padding: 18px 22px; margin-top: 22px; }
h2 { font-size: 19px; margin: 0 0 12px; }
.pair { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.pair > * { min-width: 0; max-width: 100%; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; text-align: right; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
td:first-child, th:first-child { text-align: left; }
tr.summary td { font-weight: 600; background: #fafbfc; }
tr.chosen td { background: #fdecea; font-weight: 600; }
table.ktable th, table.ktable td { padding: 1px 10px; font-size: 13px; }
table.confused td { vertical-align: middle; }
td.pairname { font-weight: 650; white-space: nowrap; }
td.thumbs, table.confused th:last-child { text-align: left; }
figure { margin: 0; }
figure.chart { flex: 1 1 420px; max-width: 600px; }
figure.chart img { width: 100%; height: auto; display: block; }
figure.chart.wide img { min-width: 460px; }
figure.chart figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
img.digit { image-rendering: pixelated; border: 1px solid var(--line); border-radius: 4px;
            margin: 2px; background: #fff; vertical-align: middle; }
.gallery { display: grid; gap: 14px;
           grid-template-columns: repeat(auto-fill, minmax(min(300px, 100%), 1fr)); }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 10px;
        display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
.card figcaption { display: flex; flex-direction: column; font-size: 14px; }
.card .true { color: var(--good); font-weight: 650; }
.card .pred { color: var(--bad); font-weight: 650; }
.neighbours { flex-basis: 100%; display: flex; flex-wrap: wrap; gap: 4px; align-items: end; }
.neighbours .sub { flex-basis: 100%; }
.nb { display: flex; flex-direction: column; align-items: center; font-size: 11px; }
.nb.miss span { color: var(--bad); font-weight: 600; }
.nb.match span { color: var(--good); }
.nb span { white-space: nowrap; }
p.why { flex-basis: 100%; margin: 0; font-size: 13px; }
img.heat { image-rendering: pixelated; border: 1px solid var(--line); border-radius: 4px; }
@media (max-width: 600px) {
  main { padding: 12px 8px 40px; }
  section { padding: 12px 10px; }
  header h1 { font-size: 22px; }
  .tile { min-width: 0; flex: 1 1 130px; padding: 8px 10px; }
  .tile .value { font-size: 20px; }
  .pair { gap: 14px; }
  figure.chart { flex-basis: 100%; }
  th, td { padding: 3px 6px; }
}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network: images are data: URLs and nothing else may load.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )
