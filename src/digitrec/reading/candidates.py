"""The candidate digits of one image, for the model to read and :mod:`digitrec.reading.cuts`
to choose among: everything :func:`digitrec.reading.recognize.read_images` does before the
model.

The ink is found and grouped into marks (:mod:`digitrec.reading.segment`); when the marks
lie on a slanted line the image is turned level first
(:mod:`digitrec.reading.line_direction`) and the marks found again; then every mark gets
its candidate cuts (:func:`digitrec.reading.cuts.lattice`). :func:`read_candidates` reads
them with the model in two calls at most, geometry's cuts first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitrec.reading import cuts
from digitrec.reading.framing import TILE
from digitrec.reading.ink import NO_INK, Box, checked_grey, find_ink
from digitrec.reading.line_direction import MIN_ANGLE, level, line_angle
from digitrec.reading.segment import Mark, Segmentation, digit_marks, to_original

# Reads a block of MNIST-style tiles: each one's class probabilities and, when the model
# knows, its distance to the nearest digit it knows (see Model.proba_and_distance).
Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Candidates:
    """The candidate digits of one image: the lattice of pieces (see
    :class:`~digitrec.reading.cuts.Lattice`; its masks dropped), and the tiles and boxes
    (original image coordinates) of the pieces to read, in :meth:`Lattice.read` order;
    ``diagnosis`` says why there are none. ``proba`` and ``distance`` hold what the model
    said of each tile read so far (NaN for the others)."""

    lattice: cuts.Lattice
    tiles: np.ndarray
    boxes: list[Box]
    diagnosis: str | None = None
    proba: np.ndarray | None = None
    distance: np.ndarray | None = None

    @classmethod
    def chain(cls, found: Segmentation) -> Candidates:
        """The digits of ``found`` as the only path: no choice to make."""
        lattice = cuts.Lattice(nodes=len(found.tiles) + 1)
        for i, box in enumerate(found.boxes):
            lattice.add(i, i + 1, None, box, max(box[3], 1), 0.0, True, (i, i))
        return cls(lattice, found.tiles, list(found.boxes), found.diagnosis)

    def first(self) -> np.ndarray:
        """The tiles to read first: geometry's pieces (positions in :attr:`tiles`)."""
        geometric = np.asarray(self.lattice.geometric, bool)[self.lattice.read()]
        return np.flatnonzero(geometric)

    def more(self) -> np.ndarray:
        """The tiles to read next: the other candidates of the marks worth another look."""
        if self.proba is None:
            return np.zeros(0, np.int64)
        best = self.proba.max(axis=1)
        explore = cuts.to_explore(self.lattice, best, self.distance)
        wanted = [
            position
            for position, piece in enumerate(self.lattice.read())
            if np.isnan(best[position]) and explore[list(self.lattice.marks[piece])].any()
        ]
        return np.asarray(wanted, np.int64)

    def take(self, positions: np.ndarray, proba: np.ndarray, distance: np.ndarray | None) -> None:
        """Keep what the model said of the tiles at ``positions``."""
        if self.proba is None:
            self.proba = np.full((len(self.tiles), proba.shape[1]), np.nan)
            self.distance = None if distance is None else np.full(len(self.tiles), np.nan)
        self.proba[positions] = proba
        if self.distance is not None and distance is not None:
            self.distance[positions] = distance

    def chosen(self) -> list[int]:
        """The tiles (positions) that make the reading with the highest score."""
        if self.proba is None:
            return []
        best = self.proba.max(axis=1)
        scores = cuts.piece_scores(self.lattice, best, self.distance)
        position = {piece: n for n, piece in enumerate(self.lattice.read())}
        return [position[piece] for piece in cuts.choose(self.lattice, scores)]


def read_candidates(read: Reader, found: list[Candidates]) -> None:
    """Read the candidates of all the images, in two model calls at most: geometry's
    pieces first, then the other candidates of the marks worth another look."""
    for stage in (Candidates.first, Candidates.more):
        wanted = [stage(item) for item in found]
        if not any(len(positions) for positions in wanted):
            continue
        proba, distance = read(
            np.concatenate([item.tiles[p] for item, p in zip(found, wanted, strict=True)])
        )
        taken = 0
        for item, positions in zip(found, wanted, strict=True):
            part = slice(taken, taken + len(positions))
            if len(positions):
                item.take(positions, proba[part], None if distance is None else distance[part])
            taken += len(positions)


def find_candidates(image: np.ndarray) -> Candidates:
    """The candidate digits in a greyscale image (uint8, any size but a 28x28 tile)."""
    grey = checked_grey(image)
    found = _marks(grey)
    if isinstance(found, str):
        return _none(found)
    ink, marks = found
    back = None
    angle = line_angle([box for mark in marks for _, box in mark.pieces()])
    if angle is not None and abs(angle) >= MIN_ANGLE:
        turned, back = level(grey, angle)
        again = _marks(turned)
        if isinstance(again, str):
            back = None
        else:
            grey = turned
            ink, marks = again
    lattice = cuts.lattice(ink, marks)
    tiles = cuts.tiles(ink, lattice)
    boxes = [to_original(lattice.boxes[i], ink.scale, grey.shape) for i in lattice.read()]
    if back is not None:
        boxes = [back(box) for box in boxes]
    lattice.masks = [None] * len(lattice)
    if len(tiles) == 0:
        return _none("no digits found")
    return Candidates(lattice, tiles, boxes)


def _marks(grey: np.ndarray) -> tuple[object, list[Mark]] | str:
    ink = find_ink(grey)
    if ink is None:
        return NO_INK
    marks = digit_marks(ink)
    if isinstance(marks, str):
        return marks
    if not marks:
        return "no digits found"
    return ink, marks


def _none(diagnosis: str) -> Candidates:
    return Candidates(cuts.Lattice(nodes=1), np.zeros((0, TILE, TILE), np.uint8), [], diagnosis)
