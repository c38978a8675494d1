"""From an image of handwriting to the number it shows: segment, classify each digit.

This is the one path that the CLI's ``predict``, the web app and batch jobs share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import ImageError
from .line_direction import MIN_ANGLE, level, line_angle
from .models import Model
from .preprocess import Segmentation, segment, to_mnist_tile

TILE = 28
MARGIN = 4


@dataclass
class DigitReading:
    """One digit: the answer, the probability of every class, where it was, what was seen."""

    digit: int
    probability: float
    probabilities: list[float]
    box: tuple[int, int, int, int]  # x, y, width, height in the original image
    tile: np.ndarray  # the 28x28 MNIST-style tile the model saw

    def to_json(self) -> dict:
        return {
            "digit": self.digit,
            "probability": round(self.probability, 4),
            "probabilities": [round(p, 4) for p in self.probabilities],
            "box": list(self.box),
        }


@dataclass
class Reading:
    """Every digit found in one image, left to right."""

    digits: list[DigitReading] = field(default_factory=list)
    diagnosis: str | None = None  # why nothing was read, e.g. "no ink found"

    @property
    def text(self) -> str:
        return "".join(str(d.digit) for d in self.digits)

    def to_json(self) -> dict:
        single = self.digits[0] if len(self.digits) == 1 else None
        return {
            "text": self.text,
            "digit": single.digit if single else None,
            "probability": round(single.probability, 4) if single else None,
            "digits": [d.to_json() for d in self.digits],
            "diagnosis": self.diagnosis,
        }


def tiles_to_model_input(tiles: np.ndarray, model: Model) -> np.ndarray:
    """MNIST-style 28x28 uint8 tiles -> the image size and value range the model knows."""
    height, width = model.input_shape
    if (height, width) == (TILE, TILE) and model.max_value == 255:
        return tiles
    # MNIST frames a digit's 20x20 box with 4 blank pixels; smaller datasets such as the
    # UCI 8x8 digits fill their frame, so drop that margin before shrinking.
    boxes = tiles[:, MARGIN : TILE - MARGIN, MARGIN : TILE - MARGIN]
    resized = np.stack(
        [cv2.resize(t, (width, height), interpolation=cv2.INTER_AREA) for t in boxes]
    ).astype(np.float64)
    return np.rint(resized * (model.max_value / 255.0)).astype(np.uint8)


def read_tiles(model: Model, tiles: np.ndarray, boxes) -> list[DigitReading]:
    """Classify MNIST-style tiles, keeping each one's box."""
    if len(tiles) == 0:
        return []
    probabilities = model.predict_proba(tiles_to_model_input(tiles, model))
    return readings_of(probabilities, model.classes, tiles, boxes)


def readings_of(probabilities: np.ndarray, classes, tiles: np.ndarray, boxes) -> list[DigitReading]:
    """One reading per tile from the model's class probabilities ``(n, len(classes))``."""
    readings = []
    for tile, box, row in zip(tiles, boxes, probabilities, strict=True):
        best = int(np.argmax(row))
        full = np.zeros(10)
        full[np.asarray(classes, dtype=int)] = row
        readings.append(
            DigitReading(int(classes[best]), float(row[best]), full.tolist(), tuple(box), tile)
        )
    return readings


def find_digits(image: np.ndarray) -> Segmentation:
    """The tiles and boxes of every digit in a greyscale image (uint8, any size), or a
    diagnosis of why there are none: everything :func:`read_image` does before the model."""
    if image.shape == (TILE, TILE):
        # Already a single MNIST-style digit: no segmentation, just MNIST's framing.
        try:
            tile = to_mnist_tile(image)
        except ImageError as exc:  # a blank tile: a diagnosis, like any other image
            return Segmentation(np.zeros((0, TILE, TILE), np.uint8), [], str(exc))
        return Segmentation(tile[None], [(0, 0, TILE, TILE)], None)
    found = _level_line(image, segment(image))
    if found.diagnosis is None and len(found.tiles) == 0:
        return Segmentation(found.tiles, [], "no digits found")
    return found


def _level_line(image: np.ndarray, found: Segmentation) -> Segmentation:
    """The digits found again in the image turned level when they lie on a slanted line
    (see :mod:`digitrec.line_direction`), with boxes in the original image."""
    angle = line_angle(found.boxes) if found.diagnosis is None else None
    if angle is None or abs(angle) < MIN_ANGLE:
        return found
    turned, back = level(image, angle)
    again = segment(turned)
    if again.diagnosis is not None or len(again.tiles) == 0:
        return found
    return Segmentation(again.tiles, [back(box) for box in again.boxes], None)


def read_image(model: Model, image: np.ndarray) -> Reading:
    """Read every digit in a greyscale image (uint8, any size)."""
    found = find_digits(image)
    if found.diagnosis:
        return Reading(diagnosis=found.diagnosis)
    return Reading(read_tiles(model, found.tiles, found.boxes))
