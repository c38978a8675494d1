"""Real pen-written digits (UNIPEN) shipped with digitrec, and the tiles they train on.

The data: 6,533 isolated digits of category 1a from UNIPEN train_r01_v07, written by 30
writers at five institutions (Synaptics, GMD, University of Queensland, ART, Princeton).
Source: the International Unipen Foundation, "Unipen data set of on-line (vectorial)
handwriting - train_r01_v07", Zenodo, doi:10.5281/zenodo.1195803, licence CC BY 4.0 (see
``data/unipen/README.md``). The rest of UNIPEN is held out for evaluation and is not used
anywhere in digitrec.

The file (``unipen/unipen-1a-dev.npz``) holds pen trajectories: ``points`` int16 (N, 2), x
and y in thousandths of an inch with y pointing down; ``stroke_ends`` (end index in
``points`` of each stroke); ``sample_ends`` (end index in the strokes of each sample);
``label``; ``writer``; ``institution``.

Writers, not samples, are split into a tuning part and a held-out part
(:func:`is_held_out_writer`): a writer is held out when the first 32 bits of the SHA-256 of
its id, as a big-endian integer, are divisible by 3 (10 of the 30 writers, 2,828 digits).
Models train on the tuning writers only (:func:`training_tiles`), so that the held-out
writers measure how digitrec reads people it has never seen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from digitrec import progress
from digitrec.errors import DatasetError

SHIPPED = Path(__file__).resolve().parent / "unipen" / "unipen-1a-dev.npz"
CREDIT = (
    "UNIPEN train_r01_v07 category 1a, International Unipen Foundation, "
    "doi:10.5281/zenodo.1195803, CC BY 4.0"
)
_ARRAYS = ("points", "stroke_ends", "sample_ends", "label", "writer", "institution")
# Fixed-point bits of cv2's line drawing: strokes land on sixteenths of a pixel.
_SHIFT = 4
# Each training digit is drawn this many times, each with its own pen width and size: the
# stroke normalisation of the reading path then meets the spread of pens people use.
RENDERINGS = 2
# The seed of the training renderings (any fixed value: the tiles are the same every time).
TRAINING_SEED = 15


@dataclass(frozen=True)
class PenDigits:
    """Pen trajectories of labelled digits, in the file's layout (see the module docstring)."""

    points: np.ndarray
    stroke_ends: np.ndarray
    sample_ends: np.ndarray
    label: np.ndarray
    writer: np.ndarray
    institution: np.ndarray

    def __len__(self) -> int:
        return len(self.sample_ends)

    def strokes(self, index: int) -> list[np.ndarray]:
        """Sample ``index`` as a list of float (n, 2) strokes, x and y in 1/1000 inch."""
        first = int(self.sample_ends[index - 1]) if index > 0 else 0
        last = int(self.sample_ends[index])
        out = []
        for stroke in range(first, last):
            start = int(self.stroke_ends[stroke - 1]) if stroke > 0 else 0
            out.append(self.points[start : int(self.stroke_ends[stroke])].astype(np.float64))
        return out

    def writer_indices(self, part: str) -> np.ndarray:
        """Indices of the samples by the "tuning" or the "held-out" writers, or "all"."""
        if part == "all":
            return np.arange(len(self))
        held = np.array([is_held_out_writer(str(w)) for w in self.writer])
        if part == "held-out":
            return np.flatnonzero(held)
        if part == "tuning":
            return np.flatnonzero(~held)
        raise ValueError(f"unknown part {part!r}; choose tuning, held-out or all")


def load(path: Path = SHIPPED) -> PenDigits:
    """Read the pen digits file at ``path`` (no pickled objects are accepted)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read UNIPEN digits from {path}: {exc}") from exc
    digits = PenDigits(**arrays)
    if not (len(digits.label) == len(digits.writer) == len(digits) > 0):
        raise DatasetError(f"{path}: labels, writers and samples differ in number")
    return digits


def is_held_out_writer(writer: str) -> bool:
    """The split rule: held out when SHA-256(writer id)'s first 32 bits are divisible by 3."""
    return int(hashlib.sha256(writer.encode()).hexdigest()[:8], 16) % 3 == 0


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a set: the same item whatever the set's size."""
    return np.random.default_rng([seed, index])


def height_of(strokes: list[np.ndarray]) -> float:
    """The height of a sample's strokes, in the file's units (at least 1)."""
    joined = np.concatenate(strokes)
    return max(float(np.ptp(joined[:, 1])), 1.0)


def ink_image(strokes: list[np.ndarray], *, scale: float, pen: float, pad: int) -> np.ndarray:
    """Strokes drawn with a round pen ``pen`` pixels wide as float32 ink coverage (1.0 full),
    ``scale`` pixels per 1/1000 inch, tightly framed with ``pad`` blank pixels around."""
    joined = np.concatenate(strokes)
    low = joined.min(axis=0)
    extent = (joined.max(axis=0) - low) * scale
    radius = pen / 2
    width = int(np.ceil(extent[0] + 2 * (pad + radius))) + 1
    height = int(np.ceil(extent[1] + 2 * (pad + radius))) + 1
    canvas = np.zeros((height, width), np.uint8)
    thickness = max(1, int(round(pen)))
    for stroke in strokes:
        fixed = np.rint(((stroke - low) * scale + pad + radius) * (1 << _SHIFT)).astype(np.int32)
        if len(fixed) == 1 or np.all(fixed == fixed[0]):
            # A dot: the pen touched down and lifted.
            cv2.circle(canvas, tuple(fixed[0]), int(round(radius * (1 << _SHIFT))), 255,
                       -1, cv2.LINE_AA, _SHIFT)  # fmt: skip
        else:
            cv2.polylines(canvas, [fixed], False, 255, thickness, cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) / 255.0


def training_tiles(
    digits: PenDigits,
    indices: np.ndarray,
    *,
    renderings: int = RENDERINGS,
    seed: int = TRAINING_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format tiles and labels of the samples at ``indices``, each drawn ``renderings``
    times and framed by the reading path itself (:func:`digitrec.reading.recognize.find_digits`),
    so that a training tile looks exactly like the tile of the same ink read from a picture.

    Each rendering is a white-on-black drawing 40-110 px tall with a round pen of 4-15% of
    that height. A drawing the reading path does not find as exactly one digit is left out.
    """
    from digitrec.reading.recognize import find_digits

    tiles, labels = [], []
    work = [(int(i), r) for i in indices for r in range(renderings)]
    for index, rendering in progress.bar(work, desc="drawing UNIPEN digits", unit="digit"):
        rng = item_rng(seed, index * renderings + rendering)
        strokes = digits.strokes(index)
        height = float(rng.uniform(40, 110))
        pen = float(rng.uniform(0.04, 0.15)) * height
        ink = ink_image(strokes, scale=height / height_of(strokes), pen=pen, pad=int(height / 3))
        found = find_digits(np.rint(ink * 255).astype(np.uint8))
        if found.diagnosis is None and len(found.tiles) == 1:
            tiles.append(found.tiles[0])
            labels.append(int(digits.label[index]))
    return np.stack(tiles), np.array(labels, np.uint8)
