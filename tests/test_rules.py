"""Ruled and squared paper: the printed lines are taken out of the ink, the digits on them
are kept whole, and long pen strokes are never taken for printed lines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digitrec.reading.ink import find_ink
from digitrec.reading.rules import printed_lines
from digitrec.reading.segment import segment
from digitrec.testing import synthetic

HEIGHT = 60


@pytest.fixture(scope="module")
def font():
    return synthetic.handwriting_fonts()[0]


def _photo(
    font, text: str, *, spacing: float | None, squared: bool = False, seed: int = 2
) -> np.ndarray:
    """A grey photo of ``text`` written on paper printed with light blue lines every
    ``spacing`` digit heights, the writing standing on one of them, and columns too if
    ``squared``; plain paper if ``spacing`` is None."""
    rng = np.random.default_rng(seed)
    ink = synthetic.render_text(text, font, rng, height=HEIGHT, jitter=False).ink
    rgb = synthetic.photo_rgb_of_ink(ink, rng, height=HEIGHT, shadow=0.0).astype(np.float32)
    if spacing is not None:
        h, w = rgb.shape[:2]
        lines = np.zeros((h, w), np.float32)
        base = int(np.flatnonzero((rgb.mean(axis=2) < 120).any(axis=1))[-1])
        step = spacing * HEIGHT
        for y in np.arange(base % step, h, step):
            cv2.line(lines, (0, int(y)), (w - 1, int(y)), 1.0, 2)
        if squared:
            for x in np.arange(w / 2 % step, w, step):
                cv2.line(lines, (int(x), 0), (int(x), h - 1), 1.0, 1)
        # Printed under the ink: it shows only where the paper does.
        alpha = (0.6 * lines * (rgb.mean(axis=2) > 150))[..., None]
        rgb = rgb * (1 - alpha) + np.array([150.0, 175.0, 225.0]) * alpha
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("spacing", [0.5, 1.3])
@pytest.mark.parametrize(("text", "seed"), [("8", 3), ("9", 3), ("3080", 2)])
def test_digits_on_ruled_paper_are_found_without_the_lines(font, text, seed, spacing, squared):
    # Kept, the lines joined the 8 and the 9: boxes the width of the photo.
    plain = segment(_photo(font, text, spacing=None, seed=seed))
    lined = segment(_photo(font, text, spacing=spacing, squared=squared, seed=seed))
    assert len(plain.boxes) == len(lined.boxes) == len(text)
    for (_, _, w0, h0), (_, _, w1, h1) in zip(plain.boxes, lined.boxes, strict=True):
        assert abs(w1 - w0) <= 0.25 * HEIGHT and abs(h1 - h0) <= 0.25 * HEIGHT


def test_a_digit_crossed_by_lines_is_read_as_one_without_them(font):
    photo = _photo(font, "8", spacing=0.6, squared=True)
    ink = find_ink(photo)
    assert ink is not None
    assert all(w < 2 * HEIGHT for w in ink.stats[:, 2])  # no line left, however short
    assert len(segment(photo).boxes) == 1


def test_writing_without_lines_has_none(font):
    for seed, text in enumerate(["7", "1111111", "2024", "17507"]):
        ink = synthetic.render_text(text, font, np.random.default_rng(seed), height=HEIGHT).ink
        page = np.pad(255 - np.rint(ink * 255).astype(np.uint8), 4, constant_values=255)
        assert printed_lines(*_mask_and_contrast(page)) is None, text


def _mask_and_contrast(dark_on_light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ink mask and a contrast map of a clean image: ink darker than the paper."""
    contrast = (255.0 - dark_on_light.astype(np.float32)) / 255.0
    return (contrast >= 0.3).astype(np.uint8), contrast.astype(np.float32)


def test_long_pen_strokes_are_not_printed_lines():
    # A 1 drawn the whole height of its canvas: a line from edge to edge, and all there is.
    one = np.full((300, 300), 255, np.uint8)
    cv2.line(one, (150, 0), (150, 299), 0, 14)
    assert printed_lines(*_mask_and_contrast(one)) is None
    # A big 2 whose thick base runs from edge to edge: inside the mark all along.
    two = np.full((300, 300), 255, np.uint8)
    cv2.ellipse(two, (150, 90), (100, 70), 0, 180, 360, 0, 30)
    cv2.line(two, (250, 90), (10, 280), 0, 30)
    cv2.line(two, (0, 280), (299, 280), 0, 30)
    assert printed_lines(*_mask_and_contrast(two)) is None
