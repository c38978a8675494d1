"""Pages of numbers (issue 16): signs and decimal points, tables as CSV, lines that touch,
marks that are not digits flagged, text that is not numbers never read as a sure number.

Fixtures are written with a handwriting font by :mod:`digitrec.testing.pages` (the same
writer the benchmark uses) and read by a kNN model on 10,000 MNIST images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import models
from digitrec.data.images import load_image
from digitrec.reading.layout import find_layout
from digitrec.reading.page import read_page
from digitrec.testing import pages, synthetic


@pytest.fixture(scope="module")
def model(mnist):
    return models.train("knn", mnist.subset(10_000, None, seed=0), {"n_neighbors": 3})


@pytest.fixture(scope="module")
def font():
    return synthetic.handwriting_fonts()[0]


def _on_paper(ink: np.ndarray, pad: int = 40) -> np.ndarray:
    """Ink coverage -> a uint8 greyscale image, dark ink on white with a margin."""
    return 255 - np.rint(np.pad(ink, pad) * 255).astype(np.uint8)


def _number(text: str, font, seed: int = 0) -> np.ndarray:
    ink, _ = pages.write_field(text, font, np.random.default_rng(seed), 80)
    return _on_paper(ink)


def _table(lines: list[list[str]], font, spacing: str = "close", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _on_paper(pages.page_ink(lines, True, font, rng, spacing, 60))


def test_a_minus_sign_is_read_as_a_minus_not_a_seven(model, font):
    reading = read_page(model, _number("-4", font))
    assert reading.text == "-4"
    assert len(reading.digits) == 1


def test_a_decimal_point_is_kept(model, font):
    reading = read_page(model, _number("3.5", font))
    assert reading.text == "3.5"
    assert [d.digit for d in reading.digits] == [3, 5]


def test_a_thousands_comma_is_kept(model, font):
    assert read_page(model, _number("1,250", font)).text == "1,250"


def test_a_two_by_two_table_comes_back_as_csv_rows(model, font, tmp_path):
    image = _table([["77", "17"], ["11", "71"]], font)
    path = tmp_path / "table.png"
    Image.fromarray(image).save(path)
    model_dir = models.save(model, tmp_path / "model")
    csv_path = tmp_path / "table.csv"
    done = run_digitrec("predict", model_dir, path, "--layout", "table", "--csv", csv_path)
    assert done.returncode == 0, done.stderr
    assert csv_path.read_text() == "77,17\n11,71\n"


def test_a_one_above_a_seven_stays_in_two_boxes(model, font):
    reading = read_page(model, _table([["1"], ["7"]], font))
    assert reading.text == "1\n7"


def test_lines_whose_digits_touch_are_read_apart(model):
    bold = synthetic.handwriting_fonts()[1]
    table = [["38", "50"], ["27", "94"], ["61", "83"]]
    image = _table(table, bold, spacing="touching", seed=2)
    # The lines really touch: some mark reaches from one line into the next.
    count, _, stats, _ = cv2.connectedComponentsWithStats((image < 128).astype(np.uint8))
    heights = sorted(stats[1:, cv2.CC_STAT_HEIGHT])
    assert heights[-1] > 1.5 * heights[len(heights) // 2]
    reading = read_page(model, image, layout="table")
    assert [[len(f.digits) for f in line] for line in reading.lines] == [[2, 2]] * 3
    # No digit's box reaches into the next line.
    digit_heights = [d.box[3] for d in reading.digits]
    assert max(digit_heights) < 1.3 * float(np.median(digit_heights))
    assert [f.column for line in reading.lines for f in line] == [0, 1] * 3


def test_a_mark_that_is_not_a_digit_is_flagged_and_named(model, font):
    image = _number("25", font)
    ys, xs = np.nonzero(image < 128)
    # A small ring at mid-height after the number: no digit, no minus, no point.
    centre = (int(xs.max()) + 25, int((ys.min() + ys.max()) / 2))
    cv2.circle(image, centre, 6, 0, 3)
    reading = read_page(model, image)
    fields = [f for line in reading.lines for f in line]
    assert any(f.needs_review and "unknown mark" in (f.diagnosis or "") for f in fields)
    assert reading.needs_review


def test_handwritten_words_are_never_a_confident_number(model, font):
    rendering = synthetic.render_text("hello", font, np.random.default_rng(0), height=80)
    reading = read_page(model, _on_paper(rendering.ink))
    fields = [f for line in reading.lines for f in line]
    assert reading.diagnosis is not None or all(f.needs_review for f in fields)


def test_a_single_number_reads_as_before(model, font):
    image = _number("2024", font)
    page_reading = read_page(model, image)
    number_reading = read_page(model, image, layout="number")
    assert page_reading.text == number_reading.text
    assert len(page_reading.lines) == 1


def test_the_json_carries_the_flags_and_the_lines(model, font):
    reading = read_page(model, _table([["12", "34"], ["56", "78"]], font), layout="table")
    data = reading.to_json()
    assert data["text"] == reading.text
    assert [len(line) for line in data["lines"]] == [2, 2]
    field = data["lines"][0][0]
    assert {"text", "box", "confidence", "needs_review", "diagnosis", "column"} <= set(field)
    assert {"confidence"} <= set(field["digits"][0])


def test_generated_pages_are_deterministic():
    first, again = pages.page(5000), pages.page(5000)
    assert first.data == again.data and first.lines == again.lines
    assert not set(pages.TUNING_SEEDS) & set(pages.HELD_OUT_SEEDS)


def _without_its_mark(text: str, font, gap: float | None = None) -> np.ndarray:
    """``text`` written with its point or comma rubbed out (as a faint pen or a speck
    filter loses it); with ``gap``, the blank columns where it was narrowed to that many
    digit heights."""
    image = _number(text, font)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((image < 128).astype(np.uint8))
    mark = 1 + int(np.argmin(stats[1:, cv2.CC_STAT_AREA]))
    left = stats[mark, cv2.CC_STAT_LEFT]
    image[labels == mark] = 255
    if gap is None:
        return image
    inked = np.flatnonzero((image < 128).any(axis=0))
    before, after = inked[inked < left].max() + 1, inked[inked > left].min()
    height = np.median(stats[1:, cv2.CC_STAT_HEIGHT])
    keep = int(gap * height)
    return np.delete(image, np.arange(before + keep, after), axis=1)


@pytest.mark.parametrize(("text", "gap"), [("3.5", 0.65), ("63.58", 0.9), ("1,250", 0.85)])
def test_a_number_whose_point_or_comma_is_lost_is_flagged(model, font, text, gap):
    reading = read_page(model, _without_its_mark(text, font, gap))
    fields = [f for line in reading.lines for f in line]
    # Every digit is read, and nothing else: no mark is invented in the lost one's place.
    assert sum(len(f.digits) for f in fields) == sum(ch.isdigit() for ch in text)
    assert not any(ch in ".,-" for f in fields for ch in f.text)
    assert all(f.needs_review and "point or comma" in f.diagnosis for f in fields)


def _ring(page: np.ndarray, left: int, top: int, width: int, height: int = 60) -> None:
    """A '0'-like ring: a digit shape any model reads as something."""
    centre = (left + width // 2, top + height // 2)
    cv2.ellipse(page, centre, (width // 2 - 2, height // 2 - 2), 0, 0, 360, 0, 5)


def test_a_point_half_under_a_digit_is_flagged(model):
    page = np.full((200, 500), 255, np.uint8)
    for left in (60, 140, 200):
        _ring(page, left, 60, 36)
    # A dot on the baseline partly under the first ring, as the broken foot of a stroke is.
    cv2.circle(page, (100, 118), 5, 0, -1)
    (line,) = read_page(model, page).lines
    assert [f.text for f in line] == ["0.00"]
    assert "under a digit" in line[0].diagnosis


def test_a_number_beside_one_starting_with_a_point_is_flagged_too(model):
    page = np.full((200, 500), 255, np.uint8)
    for left in (40, 85, 195, 240):
        _ring(page, left, 60, 36)
    # The point is far from the number before it and close to the one after: a point
    # that belongs to the first, or one number parted at its point.
    cv2.circle(page, (180, 115), 5, 0, -1)
    (line,) = read_page(model, page).lines
    assert [f.text for f in line] == ["00", ".00"]
    assert all(f.needs_review for f in line)
    assert "one number with the next" in line[0].diagnosis


def test_a_number_beside_a_speck_taken_for_noise_is_flagged(model):
    page = np.full((200, 500), 255, np.uint8)
    for left in (100, 150, 260, 310):
        _ring(page, left, 60, 36)
    # A dot high before the first number: no minus, point or comma, read as nothing.
    cv2.circle(page, (80, 75), 4, 0, -1)
    (line,) = read_page(model, page).lines
    assert [f.text for f in line] == ["00", "00"]
    assert "speck" in line[0].diagnosis
    assert "speck" not in (line[1].diagnosis or "")


def test_digits_standing_alone_beside_columns_of_touching_lines_are_read():
    # A thick-pen drawing of a table whose lines touch: most columns are marks of several
    # lines joined, beside which a digit standing alone is small, yet a digit of its line.
    page = pages.page(5083)
    layout = find_layout(load_image(page.data))
    found = [sum(item.kind == "digit" for item in line.items) for line in layout.lines]
    written = [sum(ch.isdigit() for ch in "".join(line)) for line in page.lines]
    assert len(found) == len(written)
    # Lines 1 and 7: "9419 -746 -4698 -52" and "-12 508 -283 -34".
    assert [found[1], found[7]] == [written[1], written[7]] == [13, 10]


def test_a_digit_much_wider_than_the_others_is_flagged(model):
    page = np.full((200, 900), 255, np.uint8)
    # Three numbers of narrow digits, and one whose only "digit" is as wide as two of them
    # (a pair the segmenter left joined) though not wider than tall.
    for left in (60, 100, 220, 260, 380, 420):
        _ring(page, left, 60, 32)
    _ring(page, 540, 60, 56)
    reading = read_page(model, page)
    (line,) = reading.lines
    assert [len(f.digits) for f in line] == [2, 2, 2, 1]
    assert "digit count unsure" in line[3].diagnosis
    assert not any("digit count unsure" in (f.diagnosis or "") for f in line[:3])


def test_digits_of_two_lines_parted_through_much_ink_are_flagged(model):
    page = np.full((300, 600), 255, np.uint8)
    for left in (60, 200, 340):
        _ring(page, left, 60, 36)
        _ring(page, left, 126, 36)
    # A blot joins the first column's digits across the lines: any cut goes through ink.
    cv2.rectangle(page, (58, 108), (98, 132), 0, -1)
    reading = read_page(model, page)
    assert [[len(f.digits) for f in line] for line in reading.lines] == [[1, 1, 1]] * 2
    guessed = [["part is a guess" in (f.diagnosis or "") for f in line] for line in reading.lines]
    assert guessed == [[True, False, False]] * 2


def test_touching_digits_on_a_page_are_cut_where_the_pieces_read_best(model):
    page = np.full((330, 500), 255, np.uint8)
    for top in (60, 190):
        # Two '0's joined by a short stroke, as in a cursive number: one mark no wider
        # than tall, which geometry alone leaves whole; then a '0' on its own.
        for centre in (96, 144, 300):
            cv2.ellipse(page, (centre, top + 40), (18, 40), 0, 0, 360, 0, 6)
        cv2.line(page, (114, top + 40), (126, top + 40), 0, 6)
    reading = read_page(model, page, layout="table")
    assert reading.grid() == [["00", "0"], ["00", "0"]]

