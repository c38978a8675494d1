"""Handwriting image -> one MNIST-format tile per digit, left to right.

``segment`` finds the ink (:mod:`digitrec.reading.ink`), joins the broken strokes of one
digit, splits digits that touch, orders them left to right, and frames each digit as MNIST
did (:mod:`digitrec.reading.framing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from digitrec.reading.framing import TILE, TileTransform, apply_transform, tile_from_mask
from digitrec.reading.ink import (
    NO_INK,
    Box,
    Ink,
    bounding_box,
    checked_grey,
    crop,
    find_ink,
)

_MAX_DIGITS = 64
# A mark wider than _WIDE times its height may be touching digits.
_WIDE = 1.1
# A mark wider than _SURELY_SEVERAL times its height is several digits, however it is cut.
_SURELY_SEVERAL = 1.8
# A mark at most _PIECE times as tall as another whose box reaches into the other's by at
# least _PIECE_INSIDE of its own area is a loose piece of that digit (a '7''s bar).
_PIECE = 0.75
_PIECE_INSIDE = 0.05


@dataclass
class Mark:
    """One mark: a group of ink components (working scale) and where geometry alone cuts
    it into digits.

    ``bounds`` are the cuts, each the column of the cut in every row of ``mask``, from the
    left edge (all 0) to the right edge (all ``w``); one digit has just those two.
    """

    mask: np.ndarray
    box: Box
    bounds: list[np.ndarray]
    stroke: float

    def pieces(self) -> list[tuple[np.ndarray, Box]]:
        """The digits' masks and boxes between the cuts (the whole mark if none)."""
        if len(self.bounds) == 2:
            return [(self.mask, self.box)]
        return _cut(self.mask, self.box, self.bounds, self.stroke) or [(self.mask, self.box)]


@dataclass
class Segmentation:
    """The digits found in one image, left to right.

    ``tiles`` is ``(n, 28, 28)`` uint8, white ink on black like MNIST; ``boxes`` are
    ``(x, y, w, h)`` in the original image's pixel coordinates; ``diagnosis`` says why
    there are no tiles (for example "no ink found"), else None.
    """

    tiles: np.ndarray
    boxes: list[Box] = field(default_factory=list)
    diagnosis: str | None = None


def segment(image: np.ndarray, *, transform: TileTransform | None = None) -> Segmentation:
    """Find the handwritten digits in ``image`` (uint8 greyscale) as MNIST-format tiles.

    ``transform``, if given, is applied to the ``(n, 28, 28)`` tiles at the end (for
    example a deskewing transformer's ``transform`` method).

    Examples
    --------
    >>> import numpy as np
    >>> from digitrec.reading.segment import segment
    >>> page = np.full((100, 200), 255, np.uint8)
    >>> page[20:80, 50:58] = 0; page[20:80, 120:128] = 0   # two '1's
    >>> result = segment(page)
    >>> result.tiles.shape, result.boxes
    ((2, 28, 28), [(49, 19, 10, 62), (119, 19, 10, 62)])
    """
    ink = find_ink(checked_grey(image))
    if ink is None:
        return _empty(NO_INK)
    pieces = digit_pieces(ink)
    if isinstance(pieces, str):
        return _empty(pieces)
    return tiles_of_pieces(ink, pieces, image.shape, transform=transform)


def digit_pieces(ink: Ink) -> list[tuple[np.ndarray, Box]] | str:
    """Every digit's mask and box (working scale) in ``ink``, left to right; or a diagnosis
    when there are too many marks to be a few digits.

    :mod:`digitrec.reading.layout` calls this on one text line's ink at a time.
    """
    found = digit_marks(ink)
    if isinstance(found, str):
        return found
    pieces = [piece for mark in found for piece in mark.pieces()]
    pieces.sort(key=lambda piece: piece[1][0] + piece[1][2] / 2)
    return pieces


def digit_marks(ink: Ink) -> list[Mark] | str:
    """The marks of ``ink`` (its components, the broken strokes of one digit joined), each
    with where geometry alone would cut it, left to right; or a diagnosis when there are
    too many to be a few digits."""
    groups = _group_components(ink)
    if len(groups) > _MAX_DIGITS:
        return f"found {len(groups)} separate marks; expected a few handwritten digits"
    found = [_split_touching(ink, group, groups) for group in groups]
    found.sort(key=lambda mark: mark.box[0] + mark.box[2] / 2)
    return found


def tiles_of_pieces(
    ink: Ink,
    pieces: list[tuple[np.ndarray, Box]],
    shape: tuple[int, ...],
    *,
    transform: TileTransform | None = None,
) -> Segmentation:
    """The MNIST tiles of ``pieces`` (from :func:`digit_pieces`) and their boxes in the
    coordinates of the original image of ``shape``."""
    if not pieces:
        return _empty("no digits found")
    # Where digits are and how they split is decided on the whole marks; the tiles are made
    # of the strokes' cores.
    tiles = np.stack([tile_from_mask(mask, crop(ink.core, box)) for mask, box in pieces])
    if transform is not None:
        tiles = apply_transform(transform, tiles)
    boxes = [to_original(box, ink.scale, shape) for _, box in pieces]
    return Segmentation(tiles, boxes, None)


def _empty(diagnosis: str) -> Segmentation:
    return Segmentation(np.zeros((0, TILE, TILE), np.uint8), [], diagnosis)


def _group_components(ink: Ink) -> list[list[int]]:
    """Join the components of one digit: pieces stacked above one another (a '5' whose bar
    came loose, a '4' written as '=' and a stroke) belong together."""
    boxes = [tuple(int(v) for v in row[:4]) for row in ink.stats]
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = True
    while merged:
        merged = False
        spans = {}
        for i in range(len(boxes)):
            spans.setdefault(root(i), []).append(boxes[i])
        roots = list(spans)
        union = {r: _union_box(spans[r]) for r in roots}
        for a_index, a in enumerate(roots):
            for b in roots[a_index + 1 :]:
                if root(a) != root(b) and _same_digit(union[a], union[b]):
                    parent[root(b)] = root(a)
                    merged = True
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _same_digit(a: Box, b: Box) -> bool:
    """Stacked pieces (mostly overlapping in x, close in y), or a small piece reaching into
    a bigger one's box."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    overlap_x = min(ax + aw, bx + bw) - max(ax, bx)
    overlap_y = min(ay + ah, by + bh) - max(ay, by)
    if overlap_x >= 0.5 * min(aw, bw) and -overlap_y <= 0.6 * max(ah, bh):
        return True
    small = min((aw * ah, a), (bw * bh, b))[1]
    big = b if small is a else a
    return (
        overlap_x > 0
        and overlap_y > 0
        and small[3] <= _PIECE * big[3]
        and overlap_x * overlap_y >= _PIECE_INSIDE * small[2] * small[3]
    )


def _union_box(boxes: list[Box]) -> Box:
    x0 = min(x for x, _, _, _ in boxes)
    y0 = min(y for _, y, _, _ in boxes)
    x1 = max(x + w for x, _, w, _ in boxes)
    y1 = max(y + h for _, y, _, h in boxes)
    return x0, y0, x1 - x0, y1 - y0


def _split_touching(ink: Ink, group: list[int], groups: list[list[int]]) -> Mark:
    """The group as a mark, with its cuts into several digits where it is too wide for one.

    How wide one digit is comes from the other digits in the image when there are some,
    else from the group's height. Cuts go at the emptiest column of the vertical
    projection profile near where equal-width digits would meet, then bend around the
    overlapping parts of neighbouring digits (see ``_seam``).
    """
    box = _union_box([tuple(int(v) for v in ink.stats[i, :4]) for i in group])
    x, y, w, h = box
    window = ink.labels[y : y + h, x : x + w]
    mask = np.isin(window, ink.ids[group])
    digit_width = _typical_width(ink, groups, h)
    whole = Mark(mask, box, [np.zeros(h, np.int64), np.full(h, w, np.int64)], ink.stroke)
    count = int(round(w / digit_width)) if w > _WIDE * h else 1
    if count < 2:
        return whole
    profile = mask.sum(axis=0).astype(np.float64)
    step = w / count
    cuts = [0]
    for i in range(1, count):
        lo, hi = _cut_range(i, step, cuts[-1], w)
        if hi <= lo:
            continue
        columns = np.arange(lo, hi + 1)
        # Prefer the emptiest column; among equals, the one nearest the expected cut.
        cost = profile[columns] + np.abs(columns - i * step) / (10 * step)
        cuts.append(int(columns[np.argmin(cost)]))
    cuts.append(w)
    # A slanted or round single digit can be wide too (an italic '0', a '7' with a bar);
    # split only where every cut crosses the ink once, as where two digits touch. A cut
    # through a round digit meets it twice, above and below.
    # Beyond _SURELY_SEVERAL heights no single digit is that wide: cut along seams anyway.
    crossed = max((_runs(mask[:, c]) for c in cuts[1:-1]), default=0) > 1
    if crossed and w <= _SURELY_SEVERAL * h:
        return whole
    straight = [np.full(h, c, np.int64) for c in cuts]
    pieces = _cut(mask, box, straight, ink.stroke)
    if not pieces:
        return whole
    if len(pieces) < 2:
        return Mark(mask, box, straight, ink.stroke)
    # Digits that touch often overlap in the columns too (a '0' under the hook of a '2'),
    # and a straight cut gives one a part of the other: cut along the path through the
    # least ink instead. Widening every stroke by a pixel each side keeps that path from
    # slipping between the diagonal pixels of a stroke.
    solid = cv2.dilate(mask.astype(np.uint8), np.ones((1, 3), np.uint8))
    seams = [np.zeros(h, np.int64)]
    for i in range(1, len(cuts) - 1):
        lo, hi = _cut_range(i, step, int(seams[-1].max()), w)
        lo = min(lo, w - 1)
        seams.append(_seam(solid, lo, max(lo, hi), i * step, step))
    seams.append(np.full(h, w, np.int64))
    bent = _cut(mask, box, seams, ink.stroke)
    keep = seams if bent is not None and len(bent) == len(pieces) else straight
    return Mark(mask, box, keep, ink.stroke)


def _cut_range(i: int, step: float, previous: int, w: int) -> tuple[int, int]:
    """The first and last column the ``i``-th cut may take: within 0.3 of a digit's width
    of where equal-width digits would meet, right of the ``previous`` cut."""
    return max(previous + 1, int(i * step - 0.3 * step)), min(w - 1, int(i * step + 0.3 * step))


def _cut(
    mask: np.ndarray, box: Box, bounds: list[np.ndarray], stroke: float
) -> list[tuple[np.ndarray, Box]] | None:
    """The pieces of ``mask`` between consecutive cuts (each cut a column per row), with
    their boxes; pieces with too little ink are dropped. None if a piece is flat: the end
    of a bar (a '7' or '4' crossed wide), not a digit."""
    x, y, w, h = box
    columns = np.arange(w)[None, :]
    pieces = []
    for left, right in zip(bounds[:-1], bounds[1:], strict=True):
        part = mask & (columns >= left[:, None]) & (columns < right[:, None])
        if part.sum() < 2 * stroke * stroke:
            continue
        px, py, pw, ph = bounding_box(part)
        if ph < 0.5 * h:
            return None
        pieces.append((part[py : py + ph, px : px + pw], (x + px, y + py, pw, ph)))
    return pieces


def _seam(ink: np.ndarray, lo: int, hi: int, expected: float, step: float) -> np.ndarray:
    """The column of a top-to-bottom cut in every row, between columns ``lo`` and ``hi``.

    The cut crosses as little ink as it can, moving at most one column a row, so it can
    pass between digits whose parts overlap in the columns (a '0' touching the hook of a
    '2'), where a straight cut would give one digit part of the other. Among equal cuts
    it keeps near ``expected``, where equal-width digits would meet.
    """
    columns = np.arange(lo, hi + 1)
    # The pull towards ``expected`` summed over all rows is what a whole column's was.
    pull = np.abs(columns - expected) / (10 * step * ink.shape[0])
    return least_cost_path(ink[:, lo : hi + 1] + pull) + lo


def least_cost_path(cost: np.ndarray, diagonal: float = 0.0) -> np.ndarray:
    """The column, in every row of ``cost``, of the top-to-bottom path of least total cost
    that moves at most one column a row (each such move costing ``diagonal`` more)."""
    total = cost[0].astype(np.float64)
    came_from = np.zeros(cost.shape, np.int64)
    index = np.arange(cost.shape[1])
    step = np.array([[diagonal], [0.0], [diagonal]])
    for row in range(1, len(cost)):
        options = np.stack([np.r_[np.inf, total[:-1]], total, np.r_[total[1:], np.inf]]) + step
        move = options.argmin(axis=0)
        total = options[move, index] + cost[row]
        came_from[row] = index + move - 1
    path = np.empty(len(cost), np.int64)
    path[-1] = int(total.argmin())
    for row in range(len(cost) - 1, 0, -1):
        path[row - 1] = came_from[row, path[row]]
    return path


def _runs(column: np.ndarray) -> int:
    """Separate stretches of ink in one column of a mask."""
    ink = column.astype(bool)
    return int(ink[0]) + int(np.count_nonzero(ink[1:] & ~ink[:-1]))


def _typical_width(ink: Ink, groups: list[list[int]], height: int) -> float:
    widths = []
    for group in groups:
        _, _, w, h = _union_box([tuple(int(v) for v in ink.stats[i, :4]) for i in group])
        # Only groups shaped like one digit; narrow '1's would make the estimate too small.
        if 0.4 * h <= w <= 1.1 * h:
            widths.append(w)
    if len(widths) >= 2:
        return max(float(np.median(widths)), 0.4 * height)
    return 0.65 * height


def to_original(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    """A working-scale box in the pixel coordinates of the original image of ``shape``."""
    x, y, w, h = box
    x0 = max(0, int(np.floor(x * scale)))
    y0 = max(0, int(np.floor(y * scale)))
    x1 = min(shape[1], int(np.ceil((x + w) * scale)))
    y1 = min(shape[0], int(np.ceil((y + h) * scale)))
    return x0, y0, x1 - x0, y1 - y0
