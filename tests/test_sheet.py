"""A sheet photographed on a darker table: the table is painted over, the writing is read;
shadows, drawings and pages that fill the photo are left alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from shadows import shadow_off_the_edge

from digitrec.reading.segment import segment
from digitrec.reading.sheet import sheet_mask, without_surroundings
from digitrec.testing import synthetic


@pytest.fixture(scope="module")
def font():
    return synthetic.handwriting_fonts()[0]


def _photographed_sheet(font, text: str, seed: int) -> np.ndarray:
    """A grey photo of ``text`` written on paper (light, shadow, blur and noise of the
    photo generator), ``text`` about 60 px tall."""
    rng = np.random.default_rng(seed)
    ink = synthetic.render_text(text, font, rng, height=60).ink
    rgb = synthetic.photo_rgb_of_ink(ink, rng, height=60, shadow=0.0)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _on_table(
    sheet: np.ndarray, *, table: int, margins: tuple[int, int, int, int], degrees: float = 0.0
) -> np.ndarray:
    """``sheet`` lying on a table of grey ``table``, turned by ``degrees``, with ``margins``
    (top, bottom, left, right) of table showing around it (0: cut off by the photo)."""
    top, bottom, left, right = margins
    h, w = sheet.shape
    photo = np.full((h + top + bottom, w + left + right), table, np.uint8)
    photo[top : top + h, left : left + w] = sheet
    if degrees:
        centre = (photo.shape[1] / 2, photo.shape[0] / 2)
        turn = cv2.getRotationMatrix2D(centre, degrees, 1.0)
        inside = np.zeros(photo.shape, np.uint8)
        inside[top : top + h, left : left + w] = 1
        turned = cv2.warpAffine(photo, turn, photo.shape[::-1], flags=cv2.INTER_LINEAR)
        kept = cv2.warpAffine(inside, turn, photo.shape[::-1], flags=cv2.INTER_NEAREST)
        photo = np.where(kept > 0, turned, table).astype(np.uint8)
    noise = np.random.default_rng(1).normal(0, 3, photo.shape)
    return np.clip(photo + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("table", "margins", "degrees"),
    [
        (60, (80, 80, 100, 100), 0.0),  # a dark table all round
        (120, (60, 90, 70, 50), 8.0),  # a lighter table, the sheet turned
        (40, (0, 120, 0, 140), 0.0),  # the sheet cut off by the photo's top and left
    ],
)
def test_a_sheet_on_a_table_is_read_without_the_table(font, table, margins, degrees):
    sheet = _photographed_sheet(font, "59", seed=3)
    photo = _on_table(sheet, table=table, margins=margins, degrees=degrees)
    # The table reads as a huge stroke or, around a small sheet, as the paper as light ink.
    assert sheet_mask(photo) is not None
    result = segment(photo)
    assert len(result.tiles) == 2
    top, _, left, _ = margins
    for x, y, w, h in result.boxes:
        assert h < 100 and w < 100  # digit-sized, nothing like the sheet or the table
        assert left <= x and top <= y  # on the sheet


def test_painting_keeps_the_writing_and_the_paper_light(font):
    sheet = _photographed_sheet(font, "7", seed=5)
    photo = _on_table(sheet, table=50, margins=(70, 70, 90, 90))
    painted = without_surroundings(photo)
    assert painted.shape == photo.shape and painted.dtype == np.uint8
    # The table is now about as light as the paper; the sheet's middle is untouched.
    paper = float(np.median(sheet))
    assert float(np.median(painted[:40, :40])) > 0.8 * paper
    h, w = sheet.shape
    middle = (slice(70 + h // 4, 70 + 3 * h // 4), slice(90 + w // 4, 90 + 3 * w // 4))
    assert np.array_equal(painted[middle], photo[middle])


@pytest.mark.parametrize("angle", range(0, 360, 45))
@pytest.mark.parametrize(("offset", "depth"), [(0, 0.5), (60, 0.6), (-60, 0.7)])
def test_a_shadow_is_not_the_edge_of_a_sheet(angle, offset, depth):
    # Painting the shadowed part of a page over would wipe out the writing in it.
    page = shadow_off_the_edge(angle, offset, depth)
    assert sheet_mask(page) is None
    assert np.array_equal(without_surroundings(page), page)


def test_light_drawings_on_a_dark_canvas_are_not_sheets():
    bar = np.zeros((300, 300), np.uint8)
    bar[20:280, 110:190] = 255  # a finger-thick 1, as full as a sheet but with nothing on it
    ring = np.zeros((300, 300), np.uint8)
    cv2.ellipse(ring, (150, 150), (110, 130), 0, 0, 360, 255, 40)  # a thick 0
    blob = np.zeros((300, 300), np.uint8)
    cv2.rectangle(blob, (60, 40), (240, 260), 255, -1)
    cv2.circle(blob, (150, 150), 20, 0, 6)  # a light square with a small dark 0 on it: a sheet
    for drawing in (bar, ring):
        assert sheet_mask(drawing) is None
    assert sheet_mask(blob) is not None


def test_pages_that_fill_the_photo_are_left_alone(font):
    for data, _ in synthetic.photos(seed=21, count=6):
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert sheet_mask(cv2.resize(rgb, (200, 150))) is None
