"""Deterministic pages of handwritten numbers: tables and lists of signed, decimal and
grouped numbers, for the layout reader (:mod:`digitrec.reading.layout`).

A page is 2-8 lines of 1-4 numbers each, written with one handwriting font from
:mod:`digitrec.testing.synthetic`, character by character at the font's own proportions
(so a point sits on the baseline and a minus at mid-height), each character a little
moved, the whole page slanted by a few degrees, then turned into a phone photo or a canvas
drawing with that module's effects. Line spacing comes in three styles: ``spaced``,
``close`` (gaps of a tenth to a quarter of a line) and ``touching`` (lines a digit's height
apart, so digits of one line touch those of the next).

Seeds: ``TUNING_SEEDS`` are for looking at failures and choosing thresholds;
``HELD_OUT_SEEDS`` are only for the final measurement (benchmarks/pages.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitrec.testing import synthetic

TUNING_SEEDS = range(5000, 5100)
HELD_OUT_SEEDS = range(6000, 6200)
SPACINGS = ("spaced", "close", "touching")
KINDS = ("plain", "signed", "decimal")


@dataclass
class Page:
    """One generated page: its encoded image and the numbers on it, line by line."""

    data: bytes
    lines: list[list[str]]
    table: bool  # every line has the same number of fields, aligned in columns
    spacing: str
    kind: str  # "plain", "signed" or "decimal"
    rendering: str  # "photo" or "drawing"

    @property
    def text(self) -> str:
        return "\n".join(" ".join(line) for line in self.lines)


def number(rng: np.random.Generator, kind: str) -> str:
    """A number as people write them: plain digits; ``signed`` ones sometimes with a minus;
    ``decimal`` ones sometimes with a point, a decimal comma or a thousands comma."""
    digits = synthetic.random_number(rng, 1, 4)
    if kind == "signed" and rng.random() < 0.5:
        return "-" + digits.lstrip("0") if digits.lstrip("0") else "-" + digits
    if kind == "decimal":
        roll = rng.random()
        if roll < 0.4:
            return f"{int(rng.integers(0, 100))}.{synthetic.random_number(rng, 1, 2)}"
        if roll < 0.6:
            return f"{int(rng.integers(0, 10))},{synthetic.random_number(rng, 2, 2)}"
        if roll < 0.8:
            return f"{int(rng.integers(1, 100))},{int(rng.integers(0, 1000)):03d}"
    return digits


def write_field(
    text: str, font: Path, rng: np.random.Generator, height: int
) -> tuple[np.ndarray, int]:
    """``text`` as float32 ink coverage, its digits about ``height`` px tall, marks at the
    font's own size and place relative to the baseline, and the row of its baseline; cut
    to the ink on the left, right and bottom."""
    face = _face(font, height)
    advance = [face.getlength(ch) for ch in text]
    width = int(sum(advance) + 0.3 * height * len(text) + 2 * height)
    canvas = Image.new("L", (width, 3 * height), 0)
    draw = ImageDraw.Draw(canvas)
    x = float(height)
    baseline = 2 * height
    for ch, step in zip(text, advance, strict=True):
        if not ch.isdigit():
            x += float(rng.uniform(0.05, 0.2)) * height
        dy = float(rng.normal(0, height / 40))
        draw.text((x, baseline + dy), ch, font=face, fill=255, anchor="ls")
        # People leave a little room around a point, a comma or a minus (before: above).
        room = 0.0 if ch.isdigit() else float(rng.uniform(0.05, 0.2))
        x += step + (float(rng.uniform(0.05, 0.25)) + room) * height
    ink = np.asarray(canvas, np.float32) / 255.0
    rows = np.flatnonzero(ink.max(axis=1) > 0.05)
    cols = np.flatnonzero(ink.max(axis=0) > 0.05)
    return ink[: rows[-1] + 1 + height // 8, cols[0] : cols[-1] + 1], baseline


def _face(font: Path, height: int) -> ImageFont.FreeTypeFont:
    """The font at the size whose digits, from the highest top to the lowest tail (some
    fonts hang a '7' or '9' below the baseline), span ``height`` pixels."""
    probe = ImageFont.truetype(str(font), 200)
    boxes = [probe.getbbox(digit, anchor="ls") for digit in "0123456789"]
    span = max(box[3] for box in boxes) - min(box[1] for box in boxes)
    return ImageFont.truetype(str(font), max(8, round(200 * height / span)))


def page_lines(rng: np.random.Generator, kind: str) -> tuple[list[list[str]], bool]:
    """2-8 lines of 1-4 numbers: a table (same count on every line) or a list."""
    count = int(rng.integers(2, 9))
    table = bool(rng.random() < 0.6)
    if table:
        columns = int(rng.integers(1, 5))
        return [[number(rng, kind) for _ in range(columns)] for _ in range(count)], True
    return [
        [number(rng, kind) for _ in range(int(rng.integers(1, 5)))] for _ in range(count)
    ], False


def page_ink(
    lines: list[list[str]],
    table: bool,
    font: Path,
    rng: np.random.Generator,
    spacing: str,
    height: int,
) -> np.ndarray:
    """The page as ink coverage, its digits about ``height`` px tall, slanted by up to 3
    degrees."""
    fields = [[write_field(text, font, rng, height) for text in line] for line in lines]
    column_gap = float(rng.uniform(1.0, 2.5)) * height
    if table:
        widths = [max(f[i][0].shape[1] for f in fields) for i in range(len(fields[0]))]
        starts = np.concatenate([[0], np.cumsum(np.array(widths) + column_gap)[:-1]])
    pitch = {"spaced": (1.5, 2.3), "close": (1.1, 1.25), "touching": (1.0, 1.08)}[spacing]
    rows = []
    for index, line in enumerate(fields):
        # Lines of one page differ a little in height, as handwriting does.
        scale = float(rng.uniform(0.85, 1.15)) if index else 1.0
        rows.append(
            [(cv2.resize(ink, None, fx=scale, fy=scale), base * scale) for ink, base in line]
        )
    total_width = int(
        max(
            (starts[-1] + widths[-1]) * 1.2 if table else 0,
            max(sum(f.shape[1] for f, _ in row) + column_gap * len(row) for row in rows),
        )
        + 2 * height
    )
    total_height = int(height * (4 + pitch[1] * len(rows)))
    page = np.zeros((total_height, total_width), np.float32)
    baseline = 2.5 * height
    for index, row in enumerate(rows):
        x = 0.0
        for column, (ink, base) in enumerate(row):
            if table:
                # Columns of numbers are right-aligned, as in a ledger.
                x = starts[column] + widths[column] - ink.shape[1]
            top = int(round(baseline - base))
            _paste(page, ink, top, int(round(x + height)) + int(rng.integers(0, height // 6 + 1)))
            x += ink.shape[1] + column_gap * float(rng.uniform(0.9, 1.3))
        if index + 1 < len(rows):
            baseline += height * float(rng.uniform(*pitch))
    angle = float(rng.uniform(-3, 3))
    centre = (page.shape[1] / 2, page.shape[0] / 2)
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    page = cv2.warpAffine(page, turn, page.shape[::-1], flags=cv2.INTER_LINEAR)
    return np.clip(page, 0, 1)


def _paste(page: np.ndarray, ink: np.ndarray, top: int, left: int) -> None:
    region = page[top : top + ink.shape[0], left : left + ink.shape[1]]
    np.maximum(region, ink[: region.shape[0], : region.shape[1]], out=region)


def page(seed: int, *, kind: str | None = None, spacing: str | None = None) -> Page:
    """The page for ``seed``: kind, spacing, font and rendering all follow from it unless
    given."""
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[seed % len(KINDS)]
    spacing = spacing or SPACINGS[(seed // len(KINDS)) % len(SPACINGS)]
    fonts = synthetic.handwriting_fonts()
    font = fonts[int(rng.integers(0, len(fonts)))]
    lines, table = page_lines(rng, kind)
    if rng.random() < 0.6:
        height = int(rng.integers(36, 64))
        ink = page_ink(lines, table, font, rng, spacing, height)
        data = synthetic.photo_of_ink(ink, rng, height=height)
        return Page(data, lines, table, spacing, kind, "photo")
    # A drawing is shrunk by 0.3-0.9 to fit its canvas: write it larger to begin with.
    ink = page_ink(lines, table, font, rng, spacing, int(rng.integers(60, 90)))
    background = ("white", "transparent", "black")[int(rng.integers(0, 3))]
    pen = int(rng.integers(1, 3))
    ink = cv2.dilate(ink, np.ones((2 * pen + 1, 2 * pen + 1), np.uint8))
    data = synthetic.drawing_of_ink(
        ink, rng, background=background, size=ink.shape[0], width=ink.shape[1]
    )
    return Page(data, lines, table, spacing, kind, "drawing")


def pages(seeds: range, **options: str) -> list[Page]:
    """One page per seed (see :func:`page`)."""
    return [page(seed, **options) for seed in seeds]
