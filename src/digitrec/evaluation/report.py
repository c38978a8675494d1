"""A model's test results as one self-contained HTML page.

Everything the page shows is inside the file: figures and digit images are PNGs embedded as
base64 ``data:`` URLs, the style sheet is inline, and there is no script, so the page opens
offline, can be mailed, and stays the same when the model or the data move. Every piece of
text that comes from the model or the data goes through :func:`html.escape`.

For kNN models the page also shows, for each misclassified image, the training images that
outvoted the right answer, and the test accuracy for each k from 1 to ``k_max``. That curve
costs one neighbour search at ``k_max`` whatever the number of k values: the votes for smaller
k are taken from the first columns of the same sorted neighbour lists, as :mod:`tuning` does.
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

from digitrec import models
from digitrec import progress as display
from digitrec.data import datasets
from digitrec.errors import DigitrecError
from digitrec.evaluation.metrics import Evaluation, evaluate
from digitrec.persistence.atomic import atomic_write_text

# Thumbnails are drawn this many CSS pixels wide whatever the image size (8x8 UCI or 28x28).
THUMB_PIXELS = 48
DEFAULT_EXAMPLES = 30
DEFAULT_NEIGHBOURS = 5
DEFAULT_K_MAX = 20


@dataclass
class KCurve:
    """Test accuracy of a kNN model for k = 1..k_max, from one neighbour search."""

    ks: list[int]
    accuracies: list[float]
    model_k: int
    distances: np.ndarray  # (n_test, k_max), sorted
    indices: np.ndarray  # (n_test, k_max) training indices


def knn_curve(
    model: models.Model, images: np.ndarray, labels: np.ndarray, k_max: int
) -> KCurve | None:
    """Re-vote the model's neighbours of every test image for each k up to ``k_max``.

    None for models that do not vote among training images.
    """
    from digitrec.neighbors.knn import vote

    train_labels = model.training_labels()
    found = None
    if train_labels is not None:
        k_max = min(k_max, len(train_labels))
        found = model.neighbors(images, k_max)
    if found is None:
        return None
    distances, indices = found
    # Votes are counted per class index, in the order of model.classes (sorted, as np.unique).
    class_of = np.searchsorted(model.classes, train_labels)[indices]
    weights = model.params.get("weights", "uniform")
    accuracies = []
    for k in range(1, k_max + 1):
        scores = vote(class_of[:, :k], distances[:, :k], len(model.classes), weights)
        predicted = model.classes[np.argmax(scores, axis=1)]
        accuracies.append(float(np.mean(predicted == labels)))
    return KCurve(
        list(range(1, k_max + 1)), accuracies, int(model.params["n_neighbors"]), distances, indices
    )


def build_report(
    model: models.Model,
    data: datasets.Dataset,
    model_path: str = "",
    examples: int = DEFAULT_EXAMPLES,
    neighbours: int = DEFAULT_NEIGHBOURS,
    k_max: int = DEFAULT_K_MAX,
) -> str:
    """The HTML page for ``model`` on ``data``'s test split."""
    from digitrec.evaluation import plots

    if tuple(model.input_shape) != tuple(data.image_shape):
        raise DigitrecError(
            f"the model takes {model.input_shape} images, {data.name} has {data.image_shape}"
        )
    result = evaluate(model, data.X_test, data.y_test, progress=display.showing())
    k_max = max(k_max, int(model.params.get("n_neighbors", 1)), neighbours)
    with display.stage("accuracy against k"):
        curve = knn_curve(model, data.X_test, data.y_test, k_max)

    title = f"{model.kind} on {data.name}"
    heatmap = plots.confusion_heatmap(
        result.confusion, result.labels, title=f"{title}: accuracy {result.accuracy:.4f}"
    )
    sections = [
        _headline(model, data, result, model_path),
        _section(
            "Per-class results",
            '<div class="pair">'
            + _classification_table(result)
            + _figure(heatmap, "confusion matrix: rows are the true digit, columns the prediction")
            + "</div>",
        ),
        _section("Most confused pairs", _confused_pairs(result, data, model.max_value)),
    ]
    if curve is not None:
        figure = plots.accuracy_against_k(curve.ks, curve.accuracies, curve.model_k)
        sections.append(
            _section(
                "Accuracy against k",
                "<p>Every k re-votes the same neighbour lists: one search at "
                f"k={curve.ks[-1]}, weights={_e(model.params.get('weights', 'uniform'))}.</p>"
                + '<div class="pair">'
                + _figure(figure, "test accuracy for each k")
                + _k_table(curve)
                + "</div>",
            )
        )
    sections.append(
        _section(
            "Misclassified test images",
            _gallery(model, data, result, examples, curve, neighbours),
        )
    )
    return _page(f"digitrec report: {title}", "\n".join(sections))


def write_report(
    model_dir: Path,
    output: Path,
    dataset: str | None = None,
    test_size: int | None = None,
    seed: int = 0,
    source: str | Path | None = None,
    examples: int = DEFAULT_EXAMPLES,
    neighbours: int = DEFAULT_NEIGHBOURS,
    k_max: int = DEFAULT_K_MAX,
) -> Path:
    """Load a saved model and its test split (or a subset), write the report atomically."""
    with display.stage("loading the model"):
        model = models.load(model_dir)
    data = datasets.load(dataset or model.info["dataset"]["name"], source)
    if test_size is not None:
        data = data.subset(None, test_size, seed)
    with display.stage("writing the report"):
        page = build_report(model, data, str(model_dir), examples, neighbours, k_max)
    atomic_write_text(Path(output), page)
    return Path(output)


# --- pieces of the page ---------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


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
    return (
        '<table class="confused"><thead><tr><th>true &rarr; predicted</th><th>count</th>'
        f"<th>examples</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _k_table(curve: KCurve) -> str:
    best = int(np.argmax(curve.accuracies))
    rows = []
    for k, accuracy in zip(curve.ks, curve.accuracies, strict=True):
        marks = []
        if k == curve.model_k:
            marks.append("model")
        if k == curve.ks[best]:
            marks.append("best")
        css = "chosen" if k == curve.model_k else ""
        rows.append(_tr([k, f"{accuracy:.4f}", ", ".join(marks)], css=css))
    head = _tr(["k", "accuracy", ""], cell="th")
    return f'<table class="ktable"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _gallery(
    model: models.Model,
    data: datasets.Dataset,
    result: Evaluation,
    examples: int,
    curve: KCurve | None,
    neighbours: int,
) -> str:
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
    train_images = model.training_images() if curve is not None else None
    train_labels = model.training_labels() if curve is not None else None
    cards = []
    for position in order:
        i = int(wrong[position])
        true, predicted = result.y_true[i], result.y_pred[i]
        card = (
            f'<figure class="card">{_img(data.X_test[i], model.max_value, f"test image {i}", 96)}'
            f"<figcaption><span class='true'>true {_e(true)}</span> "
            f"<span class='pred'>predicted {_e(predicted)}</span>"
            f"<span class='sub'>#{i}"
            + ("" if certain else f" &middot; confidence {confidence[position]:.2f}")
            + "</span>"
            "</figcaption>"
        )
        if curve is not None and train_images is not None:
            near = []
            for j, distance in zip(
                curve.indices[i, :neighbours], curve.distances[i, :neighbours], strict=True
            ):
                label = train_labels[j]
                css = "match" if label == true else "miss"
                near.append(
                    f'<div class="nb {css}">'
                    f"{_img(train_images[j], model.max_value, f'training image {j}')}"
                    f"<span>{_e(label)} &middot; {distance:.0f}</span></div>"
                )
            card += (
                '<div class="neighbours"><div class="sub">nearest training images '
                f"(label &middot; distance)</div>{''.join(near)}</div>"
            )
        cards.append(card + "</figure>")
    order_note = "in test-set order (no probabilities)" if certain else "most confident first"
    shown = f"{len(order)} of {len(wrong):,}" if len(order) < len(wrong) else f"all {len(wrong)}"
    return f'<p>{shown} mistakes, {order_note}.</p><div class="gallery">{"".join(cards)}</div>'


# --- images ---------------------------------------------------------------------------------


def _png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(figure, caption: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return (
        f'<figure class="chart"><img src="{_png_data_url(buffer.getvalue())}" '
        f'alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'
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
header h1 { font-size: 28px; margin: 0 0 6px; }
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
figure.chart figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
img.digit { image-rendering: pixelated; border: 1px solid var(--line); border-radius: 4px;
            margin: 2px; background: #fff; vertical-align: middle; }
.gallery { display: grid; gap: 14px; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
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
