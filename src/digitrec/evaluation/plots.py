"""Figures, written as PNG files with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digitrec.persistence.atomic import atomic_write_bytes  # noqa: E402


def save_figure(figure, path: Path, dpi: int = 120) -> Path:
    """Write the figure atomically and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def confusion_heatmap(confusion: np.ndarray, labels: list, title: str = "Confusion matrix"):
    """Counts as a heat map; the diagonal is muted so that the mistakes stand out."""
    figure, ax = plt.subplots(figsize=(6.4, 5.6))
    off_diagonal = confusion.astype(float)
    np.fill_diagonal(off_diagonal, np.nan)
    image = ax.imshow(off_diagonal, cmap="Reds")
    ax.imshow(np.where(np.eye(len(labels)) > 0, 1.0, np.nan), cmap="Greys", vmin=0, vmax=4)
    for (i, j), count in np.ndenumerate(confusion):
        if count:
            light = i != j and count > np.nanmax(off_diagonal) * 0.6
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if light else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    figure.colorbar(image, ax=ax, label="mistakes")
    return figure


def image_grid(images: np.ndarray, captions: list[str], columns: int = 10, title: str = ""):
    """Small images in a grid, each with a caption; ink shown dark on white."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image, cmap="gray_r", interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def prediction_figure(image: np.ndarray, predicted, actual=None, probabilities=None):
    """One image with its predicted (and actual) label, and the probability of each class."""
    columns = 2 if probabilities is not None else 1
    figure, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.2), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(image, cmap="gray_r", interpolation="nearest")
    ax.axis("off")
    title = f"predicted {predicted}"
    if actual is not None:
        title += f", actual {actual}" + ("" if predicted == actual else "  (wrong)")
    ax.set_title(title)
    if probabilities is not None:
        bars = axes[0, 1]
        bars.bar(range(len(probabilities)), probabilities, color="#4477aa")
        bars.set_xticks(range(len(probabilities)))
        bars.set_ylim(0, 1)
        bars.set_title("probability")
    return figure


def tuning_curves(results, title: str = "Cross-validated accuracy"):
    """CV accuracy against k, one line per combination of the other parameters (kNN grids)."""
    figure, ax = plt.subplots(figsize=(7, 4.5))
    lines: dict[str, list] = {}
    for point in results:
        rest = ", ".join(f"{k}={v}" for k, v in sorted(point.params.items()) if k != "n_neighbors")
        lines.setdefault(rest or "accuracy", []).append(
            (point.params.get("n_neighbors"), point.mean, point.std)
        )
    for label, rows in lines.items():
        rows.sort()
        k, mean, std = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
        ax.errorbar(k, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xlabel("k (n_neighbors)")
    ax.set_ylabel("mean CV accuracy (bars: std over folds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def comparison_chart(rows, title: str = "Models compared"):
    """One horizontal bar chart per measure of
    :func:`digitrec.evaluation.compare.compare`'s rows."""
    measures = [
        ("accuracy", "test accuracy", "{:.4f}"),
        ("fit_seconds", "fit seconds", "{:.1f}"),
        ("predict_seconds_per_1000", "predict seconds / 1,000 images", "{:.3f}"),
        ("size_mb", "model size on disk (MB)", "{:.2f}"),
        ("peak_mb", "peak memory (MB)", "{:.0f}"),
    ]
    names = [row.model + (" *" if row.note else "") for row in rows]
    figure, axes = plt.subplots(
        1, len(measures), figsize=(3.4 * len(measures), 0.5 * len(rows) + 1.6), sharey=True
    )
    positions = np.arange(len(rows))
    for ax, (key, label, fmt) in zip(axes, measures, strict=True):
        values = np.array([getattr(row, key) for row in rows], dtype=float)
        ax.barh(positions, values, color="#4477aa")
        for y, value in zip(positions, values, strict=True):
            ax.text(value, y, " " + fmt.format(value), va="center", fontsize=8)
        if key == "accuracy":
            # Accuracies of digit models differ in the second decimal: start the axis near
            # the worst one so that the differences are visible.
            low = max(0.0, float(values.min()) - 0.05)
            ax.set_xlim(low, 1.0 + (1.0 - low) * 0.25)
        else:
            ax.set_xlim(0, float(values.max()) * 1.3 or 1.0)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, names)
    axes[0].invert_yaxis()
    notes = [f"* {row.model}: {row.note}" for row in rows if row.note]
    figure.suptitle(title + ("\n" + "; ".join(notes) if notes else ""), fontsize=10)
    figure.tight_layout()
    return figure


def accuracy_against_k(
    ks, accuracies, chosen_k: float | None = None, title: str = "", parameter: str = "k"
):
    """Test accuracy of a model for each value of a parameter (by default a kNN's k), with
    the model's own value marked."""
    figure, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(ks, accuracies, marker="o", markersize=4, color="#4477aa")
    if chosen_k is not None and chosen_k in list(ks):
        accuracy = accuracies[list(ks).index(chosen_k)]
        ax.plot([chosen_k], [accuracy], marker="o", markersize=9, color="#cc3311", zorder=3)
        ax.annotate(
            f"model: {parameter}={chosen_k:g}, {accuracy:.4f}",
            (chosen_k, accuracy),
            textcoords="offset points",
            xytext=(8, -14),
            fontsize=8,
            color="#cc3311",
        )
    ax.set_xlabel("k (n_neighbors)" if parameter == "k" else parameter)
    ax.set_ylabel("test accuracy")
    ax.set_xticks(list(ks))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return figure
