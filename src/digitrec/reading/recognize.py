"""From images of handwriting to the numbers they show: segment, classify each digit.

:func:`read_images` is the one path that the CLI's ``predict``, the web app and batch jobs
share; they add loading and formatting, never recognition logic. It finds every image's
candidate digits (:mod:`digitrec.reading.candidates`), then reads those of all the images
in one model call, and a second for the marks worth another look, and chooses each image's
cuts by that reading (:mod:`digitrec.reading.cuts`): a kNN model answers a block of queries
about 70 times faster per digit than one query at a time (117 ms vs 1.6 ms per MNIST tile
against 60,000 references, measured).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from digitrec.errors import ImageError
from digitrec.explanation import Explanation
from digitrec.models import Model
from digitrec.reading.candidates import Candidates, find_candidates, read_candidates
from digitrec.reading.framing import TILE, to_mnist_tile
from digitrec.reading.line_direction import MIN_ANGLE, level, line_angle
from digitrec.reading.segment import Segmentation, segment

MARGIN = 4


@dataclass
class DigitReading:
    """One digit: the answer, the probability of every class, where it was, what was seen."""

    digit: int
    probability: float
    probabilities: list[float]
    box: tuple[int, int, int, int]  # x, y, width, height in the original image
    tile: np.ndarray  # the 28x28 MNIST-style tile the model saw
    # Why the model answered so, when asked for (``explain``).
    explanation: Explanation | None = None
    # How far the tile lies from the nearest training digit of its class, in temperatures
    # of the model's softmin (see Model.proba_and_distance); None for models without.
    distance: float | None = None

    def to_json(self) -> dict:
        return {
            "digit": self.digit,
            "probability": round(self.probability, 4),
            "probabilities": [round(p, 4) for p in self.probabilities],
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
        }

    @property
    def confidence(self) -> float:
        """The model's probability of its answer (calibrated: see benchmarks/pages.py)."""
        return self.probability


@dataclass
class Field:
    """One number on a page: its text (digits and marks such as ``-``, ``.``, ``,``), where
    it is, its digits, and whether a person should check it.

    ``confidence`` is the product of its digits'; ``needs_review`` is set when that is below
    the reader's threshold, or an unknown mark or a misplaced one was seen (``diagnosis``
    says which). ``column`` is the table column, when read as a table.
    """

    text: str
    box: tuple[int, int, int, int]
    digits: list[DigitReading]
    confidence: float
    needs_review: bool
    diagnosis: str | None = None
    column: int | None = None

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "box": list(self.box),
            "confidence": round(self.confidence, 4),
            "needs_review": self.needs_review,
            "diagnosis": self.diagnosis,
            "column": self.column,
            "digits": [d.to_json() for d in self.digits],
        }


@dataclass
class Reading:
    """Every digit found in one image, left to right; for a page read by layout, also its
    lines of fields (numbers), top to bottom."""

    digits: list[DigitReading] = field(default_factory=list)
    diagnosis: str | None = None  # why nothing was read, e.g. "no ink found"
    # What stopped this image being read (only with ``isolate_errors``); then no digits.
    failure: Exception | None = None
    lines: list[list[Field]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The number; for a page of several, its lines joined by newlines, the fields of
        a line by spaces."""
        if self.lines:
            return "\n".join(" ".join(f.text for f in line) for line in self.lines)
        return "".join(str(d.digit) for d in self.digits)

    @property
    def needs_review(self) -> bool:
        return any(f.needs_review for line in self.lines for f in line)

    def grid(self) -> list[list[str]]:
        """The fields as a table: one row per line, one cell per column (empty where a
        line has no field in that column); without columns, the fields in order."""
        width = 1 + max((f.column or 0 for line in self.lines for f in line), default=-1)
        rows = []
        for line in self.lines:
            if any(f.column is None for f in line):
                rows.append([f.text for f in line])
                continue
            row = [""] * width
            for f in line:
                # Two fields of one line in one column (a field overlapping two columns)
                # share the cell rather than lose one.
                row[f.column] = f"{row[f.column]} {f.text}".strip()
            rows.append(row)
        return rows

    def to_json(self) -> dict:
        single = self.digits[0] if len(self.digits) == 1 else None
        return {
            "text": self.text,
            "digit": single.digit if single else None,
            "probability": round(single.probability, 4) if single else None,
            "digits": [d.to_json() for d in self.digits],
            "diagnosis": self.diagnosis,
            "needs_review": self.needs_review,
            "lines": [[f.to_json() for f in line] for line in self.lines],
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


def digit_readings(
    probabilities: np.ndarray, classes, tiles: np.ndarray, boxes
) -> list[DigitReading]:
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
    (see :mod:`digitrec.reading.line_direction`), with boxes in the original image."""
    angle = line_angle(found.boxes) if found.diagnosis is None else None
    if angle is None or abs(angle) < MIN_ANGLE:
        return found
    turned, back = level(image, angle)
    again = segment(turned)
    if again.diagnosis is not None or len(again.tiles) == 0:
        return found
    return Segmentation(again.tiles, [back(box) for box in again.boxes], None)


def read_images(
    model: Model,
    images: Iterable[np.ndarray | Exception],
    *,
    one_digit: bool = False,
    explain: bool = False,
    isolate_errors: bool = False,
    model_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    layout: str = "number",
    min_confidence: float | None = None,
) -> list[Reading]:
    """Read every digit in each greyscale image (uint8, any size): one reading per image.

    ``layout`` ``number`` reads all the digits of an image as one number; ``lines``,
    ``table`` and ``auto`` read it as a page of numbers (:func:`digitrec.reading.page.read_page`,
    with ``min_confidence`` as the review threshold).

    ``images`` is gone through once, so a generator that loads them keeps one in memory at
    a time (only the digit tiles are kept). An exception in place of an image (one that
    could not be loaded) is passed through as that reading's ``failure``.

    ``one_digit`` takes all the ink of each image as one digit (labelled folders hold one
    digit per file). ``explain`` adds to each digit why the model answered so
    (:meth:`~digitrec.models.Model.explain`). With ``isolate_errors``
    an exception while segmenting one image becomes that reading's ``failure`` instead of
    stopping the others. ``model_context`` is entered around the one model call (a server
    runs its searches one at a time).
    """
    if layout != "number":
        return _read_pages(
            images, model, layout, min_confidence, isolate_errors, explain, model_context
        )
    found: list[Candidates | Exception] = []
    for image in images:
        if isinstance(image, Exception):
            found.append(image)
            continue
        try:
            found.append(_candidates(to_mnist_tile(image) if one_digit else image))
        # One unreadable or pathological image must not fail the other images of a batch.
        except Exception as exc:
            if not isolate_errors:
                raise
            found.append(exc)
    candidates = [item for item in found if isinstance(item, Candidates)]
    read, explained = candidate_reader(model, explain, model_context)
    read_candidates(read, candidates)
    readings = []
    for item in found:
        if isinstance(item, Exception):
            readings.append(Reading(failure=item))
            continue
        digits = chosen_digits(item, item.chosen(), model.classes, explained)
        readings.append(Reading(digits, item.diagnosis))
    return readings


def chosen_digits(
    item: Candidates, chosen: list[int], classes, explained: dict[bytes, Explanation]
) -> list[DigitReading]:
    """The readings of ``item``'s candidates at positions ``chosen`` (see
    :meth:`~digitrec.reading.candidates.Candidates.chosen`), each with its explanation
    where :func:`candidate_reader` gathered one."""
    if not chosen:
        return []
    tiles = item.tiles[chosen]
    digits = digit_readings(item.proba[chosen], classes, tiles, [item.boxes[i] for i in chosen])
    for position, digit in zip(chosen, digits, strict=True):
        digit.explanation = explained.get(digit.tile.tobytes())
        if item.distance is not None:
            digit.distance = float(item.distance[position])
    return digits


def candidate_reader(
    model: Model,
    explain: bool,
    model_context: Callable[[], contextlib.AbstractContextManager],
) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]], dict[bytes, Explanation]]:
    """The reader :func:`~digitrec.reading.candidates.read_candidates` calls: tiles ->
    the model's probabilities and distances; and, with ``explain``, the explanations it
    gathers, keyed by tile. The search that reads the candidates also explains them:
    explaining the chosen digits again would search for each of them twice."""
    explained: dict[bytes, Explanation] = {}

    def read(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        inputs = tiles_to_model_input(tiles, model)
        with model_context():
            if not explain:
                return model.proba_and_distance(inputs)
            proba, explanations = model.explain(inputs)
        explained.update(zip((tile.tobytes() for tile in tiles), explanations, strict=True))
        return proba, model.distance_in(explanations)

    return read, explained


def _candidates(image: np.ndarray) -> Candidates:
    """The candidate digits of one image: a 28x28 tile is one digit as it is."""
    if image.shape == (TILE, TILE):
        return Candidates.chain(find_digits(image))
    return find_candidates(image)


def _read_pages(
    images: Iterable[np.ndarray | Exception],
    model: Model,
    layout: str,
    min_confidence: float | None,
    isolate_errors: bool,
    explain: bool,
    model_context: Callable[[], contextlib.AbstractContextManager],
) -> list[Reading]:
    """Each image read as a page of numbers, its lines' digits classified line by line."""
    # Imported here: page reading builds on this module's readings.
    from digitrec.reading.page import MIN_CONFIDENCE, read_page

    threshold = MIN_CONFIDENCE if min_confidence is None else min_confidence
    readings = []
    for image in images:
        if isinstance(image, Exception):
            readings.append(Reading(failure=image))
            continue
        try:
            readings.append(
                read_page(
                    model,
                    image,
                    layout=layout,
                    min_confidence=threshold,
                    explain=explain,
                    model_context=model_context,
                )
            )
        except Exception as exc:
            if not isolate_errors:
                raise
            readings.append(Reading(failure=exc))
    return readings


def read_image(model: Model, image: np.ndarray) -> Reading:
    """:func:`read_images` for one image."""
    return read_images(model, [image])[0]
