"""Figures, written as PNG files with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .store import atomic_write_bytes  # noqa: E402


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
