"""Real pen-written digits (UNIPEN) drawn as canvas drawings, paper photos and whole numbers.

The data and the writer split live in :mod:`digitrec.data.pen_digits` (UNIPEN train_r01_v07
category 1a, International Unipen Foundation, doi:10.5281/zenodo.1195803, CC BY 4.0).
Three renderings, each deterministic for a seed and an item index:

- :func:`drawing`: a canvas drawing like the web page's finger drawing, a round pen of
  varying width, small or large, off-centre, white-on-black or black-on-white (also on a
  transparent canvas);
- :func:`photo`: the digit in ink on paper, photographed with the paper texture, light,
  shadow, warp, blur, noise and JPEG of :func:`digitrec.testing.synthetic.photo_of_ink`;
- :func:`number_photo`: 2-6 digits of one writer side by side on a line, with uneven sizes
  and spacing, touching sometimes, the line slanted by up to 20 degrees sometimes.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from digitrec.data.pen_digits import (
    CREDIT,
    PenDigits,
    height_of,
    ink_image,
    is_held_out_writer,
    item_rng,
    load,
)
from digitrec.testing.synthetic import photo_of_ink

__all__ = [
    "BACKGROUNDS",
    "CREDIT",
    "PenDigits",
    "drawing",
    "drawings",
    "is_held_out_writer",
    "lay_out_number",
    "load",
    "number_drawing",
    "number_photo",
    "numbers",
    "per_writer",
    "photo",
    "photos",
]

BACKGROUNDS = ("white", "black", "transparent", "transparent-light")
MAX_SLANT = 20.0


def drawing(strokes: list[np.ndarray], rng: np.random.Generator, *, background: str) -> bytes:
    """A canvas-like PNG of one digit: round pen 4-28 px wide on a 200-400 px canvas, the
    digit 30-85% of the canvas tall, placed anywhere. ``background`` is one of
    ``BACKGROUNDS`` ("white": black strokes; "transparent-light": white strokes on nothing)."""
    size = int(rng.integers(200, 401))
    fill = float(rng.uniform(0.3, 0.85))
    digit_height = fill * size
    pen = float(rng.uniform(0.05, 0.16)) * digit_height
    ink = ink_image(strokes, scale=digit_height / height_of(strokes), pen=pen, pad=0)
    # Wide digits (a long-flagged 1 written flat) may not fit: shrink to the canvas.
    shrink = min(1.0, 0.95 * size / max(ink.shape))
    if shrink < 1.0:
        shape = (max(1, round(ink.shape[1] * shrink)), max(1, round(ink.shape[0] * shrink)))
        ink = np.clip(cv2.resize(ink, shape, interpolation=cv2.INTER_AREA), 0, 1)
    canvas = np.zeros((size, size), np.float32)
    top = int(rng.integers(0, size - ink.shape[0] + 1))
    left = int(rng.integers(0, size - ink.shape[1] + 1))
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return canvas_png(canvas, background)


def canvas_png(ink: np.ndarray, background: str) -> bytes:
    """Ink coverage as a PNG on one of ``BACKGROUNDS``."""
    alpha = np.rint(np.clip(ink, 0, 1) * 255).astype(np.uint8)
    if background == "white":
        return _png(255 - alpha)
    if background == "black":
        return _png(alpha)
    if background in ("transparent", "transparent-light"):
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., :3] = 0 if background == "transparent" else 255
        rgba[..., 3] = alpha
        return _png(rgba)
    raise ValueError(f"unknown background {background!r}; choose from {', '.join(BACKGROUNDS)}")


def photo(strokes: list[np.ndarray], rng: np.random.Generator) -> bytes:
    """A phone-photo-like JPEG of one digit written in ballpoint or felt-tip on paper."""
    height = int(rng.integers(40, 110))
    pen = float(rng.uniform(0.035, 0.11)) * height
    ink = ink_image(strokes, scale=height / height_of(strokes), pen=pen, pad=2)
    return photo_of_ink(ink, rng, height=height)


def lay_out_number(
    samples: list[list[np.ndarray]],
    rng: np.random.Generator,
    *,
    slant: float | None = None,
    touching: bool | None = None,
) -> list[np.ndarray]:
    """One writer's digits side by side on a line, as the strokes of one drawing.

    Each digit is scaled to the writer's median digit height times a factor of 0.85-1.15
    (one time in eight 0.6-0.75 or 1.3-1.5: a digit much smaller or larger than its
    neighbours), sits on the baseline with a little jitter, and follows the previous one
    after a gap of 0.1-0.5 line heights, or of -0.04 to 0.0 where the two touch (strokes
    meet or nearly meet): every pair with ``touching``, none without, one pair in five if
    None. The line is then turned by ``slant`` degrees (random: within 3 degrees,
    or up to ``MAX_SLANT`` one time in three); positive slant climbs to the right.
    """
    line_height = float(np.median([height_of(s) for s in samples]))
    if slant is None:
        wide = rng.random() < 1 / 3
        slant = float(rng.uniform(-MAX_SLANT, MAX_SLANT) if wide else rng.uniform(-3, 3))
    out: list[np.ndarray] = []
    cursor = 0.0
    for index, strokes in enumerate(samples):
        joined = np.concatenate(strokes)
        low, high = joined.min(axis=0), joined.max(axis=0)
        if rng.random() < 1 / 8:
            size = float(rng.choice([rng.uniform(0.6, 0.75), rng.uniform(1.3, 1.5)]))
        else:
            size = float(rng.uniform(0.85, 1.15))
        size *= line_height / height_of(strokes)
        touches = rng.random() < 0.2 if touching is None else touching
        gap = rng.uniform(-0.04, 0.0) if touches else rng.uniform(0.1, 0.5)
        if index > 0:
            cursor += float(gap) * line_height
        baseline = float(rng.uniform(-0.06, 0.06)) * line_height
        for stroke in strokes:
            moved = (stroke - [low[0], high[1]]) * size + [cursor, baseline]
            out.append(moved)
        cursor += (high[0] - low[0]) * size
    angle = np.deg2rad(slant)
    # y points down, so climbing to the right is a clockwise turn on screen.
    turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    return [stroke @ turn.T for stroke in out]


def number_photo(
    samples: list[list[np.ndarray]],
    rng: np.random.Generator,
    *,
    slant: float | None = None,
    touching: bool | None = None,
) -> bytes:
    """A phone-photo-like JPEG of one writer's digits written as one number."""
    strokes = lay_out_number(samples, rng, slant=slant, touching=touching)
    line = float(np.median([height_of(s) for s in samples]))
    height = int(rng.integers(36, 90))
    pen = float(rng.uniform(0.035, 0.1)) * height
    ink = ink_image(strokes, scale=height / line, pen=pen, pad=2)
    return photo_of_ink(ink, rng, height=height)


def number_drawing(
    samples: list[list[np.ndarray]],
    rng: np.random.Generator,
    *,
    background: str = "white",
    slant: float | None = None,
    touching: bool | None = None,
) -> bytes:
    """A canvas-like PNG of one writer's digits written as one number."""
    strokes = lay_out_number(samples, rng, slant=slant, touching=touching)
    line = float(np.median([height_of(s) for s in samples]))
    height = int(rng.integers(50, 120))
    pen = float(rng.uniform(0.05, 0.14)) * height
    ink = ink_image(strokes, scale=height / line, pen=pen, pad=int(height * 0.6))
    return canvas_png(ink, background)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def drawings(digits: PenDigits, indices: np.ndarray, seed: int) -> list[tuple[bytes, str, str]]:
    """(PNG, label, writer) for each sample in ``indices``; backgrounds take turns."""
    out = []
    for i, index in enumerate(indices):
        rng = item_rng(seed, int(index))
        background = BACKGROUNDS[i % len(BACKGROUNDS)]
        data = drawing(digits.strokes(int(index)), rng, background=background)
        out.append((data, str(digits.label[index]), str(digits.writer[index])))
    return out


def photos(digits: PenDigits, indices: np.ndarray, seed: int) -> list[tuple[bytes, str, str]]:
    """(JPEG, label, writer) for each sample in ``indices``."""
    out = []
    for index in indices:
        data = photo(digits.strokes(int(index)), item_rng(seed, int(index)))
        out.append((data, str(digits.label[index]), str(digits.writer[index])))
    return out


def numbers(
    digits: PenDigits, indices: np.ndarray, seed: int, count: int
) -> list[tuple[bytes, str, str]]:
    """``count`` photos of 2-6 digit numbers, each by one writer among ``indices``' writers
    (writers taken in turn), with the number's label and writer."""
    by_writer: dict[str, list[int]] = {}
    for index in indices:
        by_writer.setdefault(str(digits.writer[index]), []).append(int(index))
    writers = sorted(by_writer)
    out = []
    for i in range(count):
        rng = item_rng(seed, i)
        writer = writers[i % len(writers)]
        length = int(rng.integers(2, 7))
        picks = rng.choice(by_writer[writer], size=length, replace=len(by_writer[writer]) < length)
        label = "".join(str(digits.label[p]) for p in picks)
        data = number_photo([digits.strokes(int(p)) for p in picks], rng)
        out.append((data, label, writer))
    return out


def per_writer(indices: np.ndarray, digits: PenDigits, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` of each writer's samples among ``indices`` (a seeded choice), so
    that every writer counts and a prolific one does not drown the others."""
    rng = np.random.default_rng(seed)
    chosen = []
    writers = digits.writer[indices]
    for writer in sorted(set(writers.tolist())):
        mine = indices[writers == writer]
        if len(mine) > limit:
            mine = np.sort(rng.choice(mine, size=limit, replace=False))
        chosen.append(mine)
    return np.concatenate(chosen)
