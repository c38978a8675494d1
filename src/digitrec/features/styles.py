"""MNIST digits rewritten in styles MNIST lacks: the slashed zero and the flagged one.

MNIST's writers were American; much of the world writes a ``1`` with a long flag (and
sometimes a foot) and crosses its zeros, and a model trained on MNIST alone reads those as
``7`` and ``8``. :func:`styled_copies` adds the missing stroke to MNIST's own zeros and
ones, so the shapes people write are among the references while everything else about the
digit stays a real person's writing.

The stroke is drawn on the digit's mask at four times MNIST's size with the digit's own pen
width, and the result is framed by :func:`digitrec.reading.framing.tile_from_mask`, the
function that frames every digit read from a picture: a styled copy looks like the tile of
the same ink read from a photo or a drawing.
"""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.reading.framing import TILE, tile_from_mask
from digitrec.reading.ink import stroke_width

__all__ = ["flagged_one", "slashed_zero", "styled_copies"]

_UP = 4


def _mask(tile: np.ndarray) -> np.ndarray:
    big = cv2.resize(tile, (TILE * _UP, TILE * _UP), interpolation=cv2.INTER_LINEAR)
    return (big >= 128).astype(np.uint8)


def _pen_width_of(mask: np.ndarray) -> int:
    """The digit's own pen width in whole pixels (at least 2) for the added stroke."""
    return max(2, int(round(stroke_width(mask))))


def _framed(mask: np.ndarray) -> np.ndarray:
    ink = mask.astype(bool)
    return tile_from_mask(ink, ink)


def slashed_zero(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zero crossed from lower left to upper right, the slash reaching up to a quarter of
    the zero's size beyond it."""
    mask = _mask(tile)
    ys, xs = np.nonzero(mask)
    left, right, top, bottom = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = right - left, bottom - top
    over = rng.uniform(0.0, 0.25)
    start = (left - over * w + rng.uniform(-0.1, 0.15) * w, bottom + over * h * rng.random())
    end = (right + over * w + rng.uniform(-0.15, 0.1) * w, top - over * h * rng.random())
    pad = int(0.4 * max(w, h))
    mask = np.pad(mask, pad)
    points = [(int(x) + pad, int(y) + pad) for x, y in (start, end)]
    cv2.line(mask, points[0], points[1], 1, _pen_width_of(mask))
    return _framed(mask)


def flagged_one(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A one with a flag from its top down to the left (20-65% of its height, 30-60 degrees
    from the stem's vertical) and, three times in ten, a foot."""
    mask = _mask(tile)
    ys, xs = np.nonzero(mask)
    top, bottom = ys.min(), ys.max()
    h = bottom - top
    tip = xs[ys <= top + 2].mean()
    length = rng.uniform(0.2, 0.65) * h
    angle = np.deg2rad(rng.uniform(30, 60))
    end = (tip - length * np.sin(angle), top + length * np.cos(angle))
    pad = int(0.6 * h)
    mask = np.pad(mask, pad)
    pen = _pen_width_of(mask)
    cv2.line(mask, (int(tip) + pad, int(top) + pad), (int(end[0]) + pad, int(end[1]) + pad), 1, pen)
    if rng.random() < 0.3:
        foot = xs[ys >= bottom - 2].mean()
        half = rng.uniform(0.15, 0.3) * h
        y = int(bottom) + pad
        cv2.line(mask, (int(foot - half) + pad, y), (int(foot + half) + pad, y), 1, pen)
    return _framed(mask)


def styled_copies(
    images: np.ndarray, labels: np.ndarray, *, zeros: int, ones: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``zeros`` slashed copies of randomly chosen zeros and ``ones`` flagged copies of
    ones among ``images`` (28x28 MNIST tiles), with their labels; the same for a seed."""
    rng = np.random.default_rng(seed)
    chosen_zeros = rng.choice(np.flatnonzero(labels == 0), zeros, replace=False)
    chosen_ones = rng.choice(np.flatnonzero(labels == 1), ones, replace=False)
    tiles = [slashed_zero(images[i], rng) for i in chosen_zeros]
    tiles += [flagged_one(images[i], rng) for i in chosen_ones]
    out = np.stack(tiles) if tiles else np.zeros((0, TILE, TILE), np.uint8)
    return out, np.repeat(np.array([0, 1], np.uint8), [zeros, ones])
