"""The direction of a line of digits, and turning it level with boxes mapped back."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.reading.line_direction import MAX_ANGLE, level, line_angle


def boxes_on_a_line(angle: float, count: int = 5) -> list[tuple[int, int, int, int]]:
    """Boxes 40x60 every 60 px along a line climbing by ``angle`` degrees (y down)."""
    slope = np.tan(np.radians(angle))
    return [(60 * i, int(round(300 - slope * 60 * i)), 40, 60) for i in range(count)]


@pytest.mark.parametrize("angle", [-20.0, -8.0, 0.0, 12.0, 20.0])
def test_the_angle_of_boxes_along_a_line_is_the_line_s(angle):
    assert line_angle(boxes_on_a_line(angle)) == pytest.approx(angle, abs=0.6)


def test_one_digit_written_high_does_not_tilt_the_line():
    boxes = boxes_on_a_line(0.0)
    x, y, w, h = boxes[2]
    boxes[2] = (x, y - 40, w, h)
    assert line_angle(boxes) == pytest.approx(0.0, abs=0.1)


def test_no_angle_for_one_box_a_column_or_a_steep_scatter():
    assert line_angle([(0, 0, 10, 10)]) is None
    assert line_angle([(0, 0, 10, 10), (0, 50, 10, 10)]) is None
    assert line_angle(boxes_on_a_line(MAX_ANGLE + 10)) is None


def test_a_slanted_bar_turned_level_is_level_and_its_box_maps_back():
    image = np.full((200, 300), 255, np.uint8)
    # A dark bar from (50, 150) climbing 20 degrees to the right.
    for t in np.linspace(0, 200, 400):
        x = int(50 + t * np.cos(np.radians(20)))
        y = int(150 - t * np.sin(np.radians(20)))
        image[y - 2 : y + 3, x - 2 : x + 3] = 0
    turned, back = level(image, 20.0)
    rows = np.flatnonzero((turned < 128).any(axis=1))
    cols = np.flatnonzero((turned < 128).any(axis=0))
    assert rows[-1] - rows[0] < 12  # level: about the bar's own thickness
    assert turned.min() == 0 and np.median(turned) == 255  # no dark corners
    x, y, w, h = back(
        (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
    )
    ys, xs = np.nonzero(image < 128)
    assert x <= xs.min() + 2 and x + w >= xs.max() - 2
    assert y <= ys.min() + 2 and y + h >= ys.max() - 2
