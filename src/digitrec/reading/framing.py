"""MNIST framing: the one place where a digit becomes a 28x28 tile the way MNIST made them.

A digit's mask is cropped without its strokes' blurred halo, its stroke width brought to
MNIST's, scaled so its longer side is 20 pixels with anti-aliasing, and placed in a 28x28
field by its centre of mass, white ink on black. :func:`to_mnist_tile` is the one-digit
path (a tile that already is MNIST-format comes back as it is; anything else has all its
ink made into one tile); :func:`frame_like_mnist` frames a grey digit again after a
distortion.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage

from digitrec.errors import UnreadableImage
from digitrec.reading.ink import (
    NO_INK,
    bounding_box,
    checked_grey,
    crop,
    disc,
    find_ink,
    scaled_size,
    stroke_width,
)

TILE = 28
BOX = 20
# Digits are normalised at four times the final size, then area-averaged down to 20 px:
# the averaging gives MNIST's anti-aliased edges.
_CANON = 4 * BOX
# MNIST's median stroke width at 28x28 (2 * area / perimeter of pixels > 127), measured on
# the training set: 2.39 px (10th-90th percentile 1.76-3.45).
STROKE_WIDTH = 2.4

# Pixels at or below this grey level do not count as ink when the digit is framed again:
# bilinear resampling leaves faint halos that would widen the box.
_INK_LEVEL = 32

TileTransform = Callable[[np.ndarray], np.ndarray]


def apply_transform(transform: TileTransform, tiles: np.ndarray) -> np.ndarray:
    """``transform(tiles)`` rounded back to uint8 tiles of the same shape."""
    out = np.asarray(transform(tiles))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(tiles.shape)


def tile_from_mask(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """A tight binary digit mask -> MNIST tile: canonical size, MNIST stroke width,
    longer side 20 px anti-aliased, centre of mass at (14, 14). The tile is drawn from the
    mask's ``core`` pixels (see :class:`~digitrec.reading.ink.Ink`), or from all of it if it
    has none."""
    cored = mask & core
    if cored.any():
        mask = crop(cored, bounding_box(cored))
    canon = _canonical(mask)
    canon = _normalise_stroke(canon)
    x, y, w, h = bounding_box(canon)
    canon = canon[y : y + h, x : x + w].astype(np.float32)
    factor = BOX / max(h, w)
    size = scaled_size(h, w, factor)
    digit = np.clip(cv2.resize(canon, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)
    return centre_by_mass(digit)


def _canonical(mask: np.ndarray) -> np.ndarray:
    """The mask resized so its longer side is ``_CANON``, padded for the stroke change."""
    h, w = mask.shape
    factor = _CANON / max(h, w)
    size = scaled_size(h, w, factor)
    as_float = mask.astype(np.float32)
    if factor < 1:
        # Any ink in a pixel keeps it: thin strokes of a large digit must not vanish.
        canon = cv2.resize(as_float, size, interpolation=cv2.INTER_AREA) > 1e-3
    else:
        canon = cv2.resize(as_float, size, interpolation=cv2.INTER_LINEAR) >= 0.5
    pad = _CANON // 4
    return np.pad(canon.astype(np.uint8), pad)


def _normalise_stroke(canon: np.ndarray) -> np.ndarray:
    """Thicken or thin the strokes so that, once scaled to 20 px, they are MNIST's width.

    Growing a stroke by ``d`` also grows the digit by ``d``, so solve
    ``(stroke + d) * 20 / (80 + d) = target`` for ``d``.
    """
    stroke = stroke_width(canon)
    target = STROKE_WIDTH
    change = (_CANON * target - BOX * stroke) / (BOX - target)
    radius = int(round(abs(change) / 2))
    if radius < 1:
        return canon
    if change > 0:
        return _keep_loops_open(canon, cv2.dilate(canon, disc(radius)))
    # Never thin a stroke below a third of its width: junctions must stay joined.
    radius = min(radius, int(stroke / 3))
    if radius < 1:
        return canon
    thinned = cv2.erode(canon, disc(radius))
    return thinned if thinned.any() else canon


def _keep_loops_open(canon: np.ndarray, thick: np.ndarray) -> np.ndarray:
    """``thick`` (``canon`` dilated) with every loop that the dilation narrowed below one
    pixel of the final tile given back its original opening: a narrow loop, such as the
    top of a slanted '8', is what tells an 8 from a 0."""
    paper = (1 - canon).astype(np.uint8)
    count, labels = cv2.connectedComponents(paper, connectivity=4)
    outside = labels[0, 0]  # canon is padded, so the outside touches the corner
    # Distance to the nearest ink after thickening; an opening narrower than one tile
    # pixel (_CANON // BOX canonical pixels) is averaged away by the final resize.
    depth = cv2.distanceTransform((1 - thick).astype(np.uint8), cv2.DIST_L2, 3)
    deepest = ndimage.maximum(depth, labels, np.arange(count))
    closed = 2 * deepest < _CANON // BOX
    closed[[0, outside]] = False  # label 0 is the ink itself
    thick[closed[labels]] = 0
    return thick


def centre_by_mass(digit: np.ndarray, full_scale: float = 255.0) -> np.ndarray:
    """Place ``digit`` (at most 20x20, ``full_scale`` times its values being grey levels:
    255 for coverage in [0, 1]) in a uint8 28x28 tile with its centre of mass on pixel
    (14, 14), shifting by whole pixels as MNIST did."""
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = np.arange(h), np.arange(w)
    com_y = float(digit.sum(axis=1) @ ys) / total
    com_x = float(digit.sum(axis=0) @ xs) / total
    top = int(round(TILE / 2 - com_y))
    left = int(round(TILE / 2 - com_x))
    # Paste into a larger field and cut the middle: a lopsided digit loses an edge row
    # rather than being moved off its centre of mass.
    margin = BOX
    field_ = np.zeros((TILE + 2 * margin, TILE + 2 * margin), np.float32)
    field_[margin + top : margin + top + h, margin + left : margin + left + w] = digit
    tile = field_[margin : margin + TILE, margin : margin + TILE]
    return np.clip(np.rint(tile * full_scale), 0, 255).astype(np.uint8)


def to_mnist_tile(image: np.ndarray, *, transform: TileTransform | None = None) -> np.ndarray:
    """One digit as a ``(28, 28)`` uint8 MNIST-format tile.

    An image that already is a 28x28 MNIST-style tile (white on black, or black on white)
    is only re-centred by its centre of mass, which leaves MNIST's own tiles unchanged.
    Anything else is segmented and all its ink taken as one digit. Raises ``ImageError``
    when there is no ink.
    """
    grey = checked_grey(image)
    tile = _as_mnist_tile(grey)
    if tile is None:
        ink = find_ink(grey)
        if ink is None:
            raise UnreadableImage(NO_INK)
        everything = np.isin(ink.labels, ink.ids)
        box = bounding_box(everything)
        tile = tile_from_mask(crop(everything, box), crop(ink.core, box))
    if transform is not None:
        tile = apply_transform(transform, tile[None])[0]
    return tile


def _as_mnist_tile(grey: np.ndarray) -> np.ndarray | None:
    """A 28x28 image with a plain border already is a tile: only re-centre it."""
    if grey.shape != (TILE, TILE):
        return None
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    if np.median(border) >= 225 and border.min() >= 128:
        grey = 255 - grey
    elif not (np.median(border) <= 30 and border.max() <= 127):
        return None
    if int(grey.max()) < 64:
        return None
    return _recentre(grey)


def _recentre(tile: np.ndarray) -> np.ndarray:
    weights = tile.astype(np.float64)
    total = weights.sum()
    idx = np.arange(TILE)
    dy = int(round(TILE / 2 - float(weights.sum(axis=1) @ idx) / total))
    dx = int(round(TILE / 2 - float(weights.sum(axis=0) @ idx) / total))
    if dy == 0 and dx == 0:
        return tile.copy()
    shifted = np.zeros_like(tile)
    src = tile[max(0, -dy) : TILE - max(0, dy), max(0, -dx) : TILE - max(0, dx)]
    shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return shifted


def frame_like_mnist(tile: np.ndarray) -> np.ndarray:
    """A grey digit on black -> uint8 28x28 with its box's longer side 20 px and its centre
    of mass on pixel (14, 14), as MNIST and :mod:`digitrec.reading.segment` frame digits.

    An image with no ink comes back black.
    """
    grey = np.clip(np.asarray(tile, dtype=np.float32), 0, 255)
    rows = np.flatnonzero((grey > _INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((grey > _INK_LEVEL).any(axis=0))
    if rows.size == 0:
        return np.zeros((TILE, TILE), np.uint8)
    crop = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    factor = BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    shrinking = factor < 1
    digit = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    digit = np.clip(digit, 0, 255)
    if float(digit.sum()) <= 0:
        return np.zeros((TILE, TILE), np.uint8)
    return centre_by_mass(digit, full_scale=1.0)
