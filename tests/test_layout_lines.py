"""Lines and fields of a page from the marks' geometry alone (:mod:`digitrec.reading.layout`,
:mod:`digitrec.reading.marks`): commas of close lines, lines whose digits touch, the gaps
that part numbers, points told from commas. Pages are drawn with plain shapes, so these
pin the geometry rules without a model or a font.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from digitrec.reading import marks
from digitrec.reading.layout import find_layout, split_at_columns
from digitrec.reading.marks import LineFrame

DIGIT = 60  # a digit's height in pixels
WIDTH = 34
STROKE = 5


def _page(height: int = 400, width: int = 900) -> np.ndarray:
    return np.full((height, width), 255, np.uint8)


def _digit(page: np.ndarray, left: int, top: int, width: int = WIDTH) -> None:
    """A '0'-like ring, ``DIGIT`` tall."""
    centre = (left + width // 2, top + DIGIT // 2)
    cv2.ellipse(page, centre, (width // 2 - 2, DIGIT // 2 - 2), 0, 0, 360, 0, STROKE)


def _comma(page: np.ndarray, left: int, baseline: int, tail: float) -> None:
    """A comma: a dot on the baseline and a tail reaching ``tail`` digits below it."""
    cv2.circle(page, (left + 5, baseline - 5), 5, 0, -1)
    cv2.line(page, (left + 7, baseline - 3), (left + 2, baseline + int(tail * DIGIT)), 0, 4)


def _items(line) -> list[str]:
    return [item.kind for item in line.items]


def test_a_tall_comma_dipping_into_the_next_line_stays_with_its_own():
    page = _page()
    top, pitch = 60, int(1.12 * DIGIT)  # lines a tenth of a digit apart
    for row in range(2):
        for column, left in enumerate((100, 140, 200, 240, 280)):
            if row == 1 and column < 3:
                continue  # the lower line has nothing of its own beside the comma
            _digit(page, left, top + row * pitch)
    _comma(page, 181, top + DIGIT, tail=0.35)
    layout = find_layout(page)
    assert len(layout.lines) == 2
    assert _items(layout.lines[0]) == ["digit", "digit", ",", "digit", "digit", "digit"]
    assert _items(layout.lines[1]) == ["digit", "digit"]


def test_a_thick_pens_comma_hanging_below_its_line_founds_no_line_of_its_own():
    page = _page()
    digit, pen = 50, 12
    for top in (60, 160):
        for left in (100, 150, 250, 300):
            centre = (left + WIDTH // 2, top + digit // 2)
            axes = (WIDTH // 2 - pen // 2, digit // 2 - pen // 2)
            cv2.ellipse(page, centre, axes, 0, 0, 360, 0, pen)
    # Half a digit tall and as wide as two of its pen's strokes: a digit's share of the
    # line's height wide, yet no wider than a comma of that pen.
    cv2.circle(page, (210, 110), 12, 0, -1)
    cv2.line(page, (214, 110), (207, 126), 0, 8)
    layout = find_layout(page)
    assert [len(line.items) for line in layout.lines] == [5, 4]


def test_a_comma_on_its_baseline_below_the_cut_stays_with_its_line_beside_the_next_ones_digits():
    page = _page()
    top = 60
    for left in (100, 140, 260, 300):
        _digit(page, left, top)
    for left in (160, 225):
        _digit(page, left, top + DIGIT + 4)  # lines a few pixels apart
    # Its dot on the upper line's baseline, its tail past the cut between the lines, and
    # nearer the lower line's digits than the upper's.
    _comma(page, 205, top + DIGIT, tail=0.25)
    upper, lower = find_layout(page).lines
    assert _items(upper) == ["digit", "digit", ",", "digit", "digit"]
    assert _items(lower) == ["digit", "digit"]


def test_lines_whose_digits_all_touch_take_their_height_from_the_single_digits():
    page = _page()
    top, pitch = 60, DIGIT + 6
    # Two lines; in three columns of four a stroke joins the digits, so the marks most
    # often seen are two digits tall.
    for column, left in enumerate((100, 150, 200, 250)):
        _digit(page, left, top)
        _digit(page, left, top + pitch)
        if column < 3:
            middle = left + WIDTH // 2
            cv2.line(page, (middle, top + DIGIT - 4), (middle, top + pitch + 4), 0, STROKE)
    layout = find_layout(page)
    assert [_items(line) for line in layout.lines] == [["digit"] * 4] * 2
    heights = [item.box[3] for line in layout.lines for item in line.items]
    assert max(heights) < 1.3 * DIGIT


def test_fields_part_at_a_wide_gap_and_before_a_minus_after_a_number():
    page = _page(200)
    x = 60
    for step in (0.15, 0.15, 0.8, 0.15):
        _digit(page, x, 60)
        x += WIDTH + int(step * DIGIT)
    _digit(page, x, 60)
    x += WIDTH + int(0.5 * DIGIT)
    # A minus a little apart from the number before it starts the next number.
    cv2.line(page, (x, 90), (x + 26, 90), 0, STROKE)
    x += 26 + int(0.15 * DIGIT)
    _digit(page, x, 60)
    layout = find_layout(page)
    (line,) = layout.lines
    kinds = [[line.items[i].kind for i in field] for field in line.fields]
    assert kinds == [["digit"] * 3, ["digit"] * 2, ["-", "digit"]]


def test_a_round_mark_is_a_point_a_tailed_one_a_comma_and_between_them_unsure():
    frame = LineFrame(0.0, 100.0)
    point = (88.0, 108.0, 20.0)  # on the baseline, as tall as wide
    comma = (88.0, 124.0, 20.0)  # a tail below the baseline
    between = (88.0, 113.0, 20.0)  # 1.25 times as tall as wide
    assert marks.classify(*point, frame) == marks.POINT
    assert marks.classify(*comma, frame) == marks.COMMA
    assert not marks.point_or_comma_unsure(*point, frame)
    assert not marks.point_or_comma_unsure(*comma, frame)
    assert marks.point_or_comma_unsure(*between, frame)


@pytest.mark.parametrize(("tail", "unsure"), [(16, False), (4, True)])
def test_a_pages_commas_no_taller_than_its_points_are_unsure(tail, unsure):
    page = _page()
    top = 60
    baseline = top + DIGIT
    for left in (100, 140, 200, 240, 400, 440, 500, 540):
        _digit(page, left, top)
    cv2.circle(page, (187, baseline - 7), 6, 0, -1)  # a round point
    # A narrow tick, as tall as the point or clearly taller.
    cv2.line(page, (488, baseline - tail), (486, baseline + 4), 0, 3)
    (line,) = find_layout(page).lines
    found = [(item.kind, item.unsure) for item in line.items if item.kind != "digit"]
    assert found == [(".", unsure), (",", unsure)]


def test_a_comma_joined_to_a_digit_of_the_line_below_is_parted_from_it_and_flagged():
    page = _page()
    top, pitch = 60, int(1.25 * DIGIT)
    for row in range(2):
        for left in (100, 140, 200, 240):
            _digit(page, left, top + row * pitch)
    # The upper line's comma hangs down onto the top of a digit below it.
    _comma(page, 181, top + DIGIT, tail=0.3)
    cv2.line(page, (183, top + DIGIT + 14), (215, top + pitch + 2), 0, 4)
    layout = find_layout(page)
    assert len(layout.lines) == 2
    upper, lower = layout.lines
    assert _items(upper) == ["digit", "digit", ",", "digit", "digit"]
    # Part of its tail may have stayed with the digit: point or comma is a guess.
    assert [item.unsure for item in upper.items] == [False, False, True, False, False]
    assert _items(lower) == ["digit"] * 4
    assert upper.fields == [[0, 1, 2, 3, 4]]


def test_a_comma_cut_from_a_digit_of_touching_lines_is_a_mark_not_a_digit():
    page = _page()
    top, pitch = 60, DIGIT + 10  # lines written close: the comma's tail reaches the next
    for left in (100, 140, 200, 240):
        _digit(page, left, top)
    for left in (100, 140, 178, 240):
        _digit(page, left, top + pitch)
    _comma(page, 181, top + DIGIT, tail=0.35)
    layout = find_layout(page)
    upper, lower = layout.lines
    assert _items(upper) == ["digit", "digit", ",", "digit", "digit"]
    assert _items(lower) == ["digit"] * 4


def test_a_line_whose_digits_all_touch_the_lines_around_it_is_found():
    page = _page(350)
    top, pitch = 40, DIGIT + 10
    rows = [top, top + pitch, top + 2 * pitch]

    def join(left: int, upper: int) -> None:
        middle = left + WIDTH // 2
        cv2.line(page, (middle, upper + DIGIT - 4), (middle, upper + pitch + 4), 0, STROKE)

    # The middle line has no digit of its own: each touches the one above or below it.
    for left, written, joined in (
        (100, (0, 1, 2), (0, 1)),
        (200, (0, 1, 2), (1,)),
        (300, (0, 1, 2), (0,)),
        (400, (0, 2), ()),
    ):
        for row in written:
            _digit(page, left, rows[row])
        for row in joined:
            join(left, rows[row])
    layout = find_layout(page)
    assert [_items(line) for line in layout.lines] == [["digit"] * 4, ["digit"] * 3, ["digit"] * 4]


def _draw_joined_columns(
    page: np.ndarray, columns: dict[int, list[list[int]]], top: int, pitch: int
) -> None:
    """Digits of touching lines: at each column's left edge, each mark is the digits of
    its lines (rows), joined by a vertical stroke from each to the next."""
    for left, marks_of_column in columns.items():
        middle = left + WIDTH // 2
        for rows in marks_of_column:
            for row in rows:
                _digit(page, left, top + row * pitch)
            for row in rows[:-1]:
                upper = top + row * pitch
                cv2.line(page, (middle, upper + DIGIT - 4), (middle, upper + pitch + 4), 0, STROKE)


def test_lines_whose_digits_all_join_other_lines_are_found_from_the_joined_heights():
    page = _page(520)
    top, pitch = 40, DIGIT + 10
    # Six lines, no digit alone: each mark is two or three digits of touching lines
    # joined, so its height is one digit height plus one or two line pitches.
    pairs, triples = [[0, 1], [2, 3], [4, 5]], [[0, 1, 2], [3, 4, 5]]
    columns = {100: pairs, 200: triples, 300: pairs, 400: triples}
    _draw_joined_columns(page, columns, top, pitch)
    layout = find_layout(page)
    assert [_items(line) for line in layout.lines] == [["digit"] * 4] * 6


def test_marks_that_share_no_one_height_are_laid_out_without_a_numerical_warning():
    # Two short and two tall bars: the heights most marks share average to a height that
    # none of them has, which once took the median of no widths.
    page = _page()
    for left, height in ((100, 40), (200, 44), (300, 80), (400, 88)):
        page[100 : 100 + height, left : left + 30] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        layout = find_layout(page)
    assert layout.diagnosis is None
    assert layout.lines


def test_lines_a_pitch_apart_are_parted_when_only_every_third_has_a_digit_alone():
    page = _page(520)
    top, pitch = 40, DIGIT + 6
    # Six touching lines; digits stand alone only on lines 0 and 3, so the lines found
    # from single digits are three pitches apart, and every other mark is two digits of
    # touching lines joined: their height (a digit plus one pitch) measures the pitch.
    columns = {
        100: [[0], [1, 2], [3], [4, 5]],
        200: [[0], [1, 2], [3], [4, 5]],
        300: [[0, 1], [2, 3], [4, 5]],
        400: [[0, 1], [2, 3], [4, 5]],
    }
    _draw_joined_columns(page, columns, top, pitch)
    layout = find_layout(page)
    assert [_items(line) for line in layout.lines] == [["digit"] * 4] * 6


def _fields_of(page: np.ndarray) -> list[list[int]]:
    layout = split_at_columns(find_layout(page))
    return [[len(field) for field in line.fields] for line in layout.lines]


def test_a_table_line_written_larger_is_split_where_the_other_lines_columns_part():
    page = _page(420, 700)
    # Two right-aligned columns of two-digit numbers a digit height apart; the last line
    # is written wider, bringing its two numbers within a third of a digit of each other
    # (closer than numbers are parted elsewhere), yet the gap lies where the others part.
    for row in range(3):
        for left in (100, 140, 240, 280):
            _digit(page, left, 40 + row * 90)
    for left in (96, 136, 176, 240, 280, 320):
        _digit(page, left, 310)
    assert _fields_of(page) == [[2, 2], [2, 2], [2, 2], [3, 3]]


def test_a_list_line_is_not_split_where_fewer_than_two_other_lines_part():
    page = _page(300, 700)
    for left in (100, 140, 240, 280):
        _digit(page, left, 40)
    # A wide number under the two of the line above, its digits a third of a digit apart.
    for left in (96, 150, 204, 258):
        _digit(page, left, 160)
    assert _fields_of(page) == [[2, 2], [4]]


def test_a_point_sitting_on_a_digit_of_the_touching_line_below_is_parted_from_it():
    page = _page()
    top, pitch = 60, DIGIT + 8  # lines written close
    for left in (100, 140, 220, 260):
        _digit(page, left, top)
    for left in (100, 140, 180, 260):
        _digit(page, left, top + pitch)
    # The upper line's point, on its baseline between its numbers' digits, rests on the
    # top of a digit below: the two are one mark reaching a quarter of a digit above the
    # lower line (its own digits differ in height by less).
    cv2.circle(page, (197, top + DIGIT - 4), 6, 0, -1)
    cv2.line(page, (197, top + DIGIT), (197, top + pitch + 2), 0, 3)
    layout = find_layout(page)
    upper, lower = layout.lines
    assert _items(upper) == ["digit", "digit", ".", "digit", "digit"]
    assert _items(lower) == ["digit"] * 4
