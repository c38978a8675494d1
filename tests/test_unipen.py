"""Pen digits drawn as canvas drawings, paper photos and numbers; and issue 15's failures.

The renderer's tests use a few hand-written pen trajectories in the UNIPEN file layout
(``digitrec.unipen.PenDigits``), so they need no data file. The failure tests draw issue
15's named failures (a European 1 with a long flag, a slashed zero, an open-top 4, a number
written on a slanted line, a cursive number whose digits touch) with the same strokes and
read them through ``recognize.read_image`` with the default model's kind trained on a
stratified 10,000 of its default training data (``mnist+unipen``). Those still read wrong
are ``xfail(strict=True)`` with the measured misreading: they turn into failures (to be
unmarked) the day they read right. The open-top 4 reads right already; the slanted line
reads right since lines are turned level before they are cut (it read 90476 before); the
flagged 1 and the slashed zero read right since the training data has other writers'
digits and slashed and flagged MNIST copies (trained on MNIST alone they read 7 and 8).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from digitrec import models
from digitrec.data.images import load_image
from digitrec.errors import DatasetError
from digitrec.reading.page import read_page
from digitrec.reading.recognize import read_image
from digitrec.testing import synthetic, unipen

# --- a few digits as pen strokes: x right, y down, 1/1000 inch, 1000 tall ----------------


def arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float) -> np.ndarray:
    """Points along an ellipse from angle ``start`` to ``stop`` (degrees, y down)."""
    t = np.deg2rad(np.linspace(start, stop, max(8, int(abs(stop - start) / 4))))
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])


def line(*points: tuple[float, float], step: float = 20.0) -> np.ndarray:
    """A polyline through ``points``, resampled about every ``step`` units like a pen."""
    out = [np.asarray(points[0], float)[None]]
    for a, b in zip(points, points[1:], strict=False):
        a, b = np.asarray(a, float), np.asarray(b, float)
        n = max(2, int(np.linalg.norm(b - a) / step))
        out.append(a + np.linspace(0, 1, n)[1:, None] * (b - a))
    return np.concatenate(out)


STROKES: dict[str, list[np.ndarray]] = {
    "0": [arc(300, 500, 270, 480, -90, 275)],
    "1": [line((200, 130), (380, 0), (380, 1000))],
    "2": [
        np.concatenate(
            [arc(300, 290, 270, 270, 190, 385), line((540, 420), (20, 1000), (620, 1000))]
        )
    ],
    "4": [line((430, 1000), (430, 0), (0, 690), (620, 690))],
    "6": [np.concatenate([arc(520, 620, 500, 620, 250, 180), arc(300, 720, 280, 280, 180, 540)])],
    "7": [line((0, 0), (600, 0), (200, 1000))],
    "9": [np.concatenate([arc(290, 280, 260, 260, 0, 365), line((550, 280), (500, 1000))])],
}
# The failures issue 15 names, drawn as people write them.
FLAGGED_ONE = [line((40, 420), (420, 0), (420, 1000))]
SLASHED_ZERO = [arc(300, 500, 270, 480, -90, 275), line((-120, 1100), (720, -100))]
# Open at the top: the left stroke stops level with the stem's top, like a 9 left open.
OPEN_FOUR = [line((100, 0), (80, 480), (560, 520)), line((560, 0), (540, 1000))]


def pen_digits(
    samples: list[tuple[str, list[np.ndarray]]], writer: str | list[str] = "x/w"
) -> unipen.PenDigits:
    """Samples (label, strokes) in the UNIPEN file's layout; ``writer`` is a writer id or
    one per sample."""
    writers = [writer] * len(samples) if isinstance(writer, str) else list(writer)
    points = np.concatenate(
        [np.rint(s).astype(np.int16) for _, strokes in samples for s in strokes]
    )
    stroke_ends = np.cumsum([len(s) for _, strokes in samples for s in strokes])
    sample_ends = np.cumsum([len(strokes) for _, strokes in samples])
    return unipen.PenDigits(
        points=points,
        stroke_ends=stroke_ends,
        sample_ends=sample_ends,
        label=np.array([int(label) for label, _ in samples], np.uint8),
        writer=np.array(writers),
        institution=np.array(["x"] * len(samples)),
    )


@pytest.fixture(scope="module")
def pen() -> unipen.PenDigits:
    return pen_digits([(label, strokes) for label, strokes in STROKES.items()])


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


# --- the renderer ---------------------------------------------------------------------------


def test_strokes_come_back_as_stored(pen):
    assert len(pen) == len(STROKES)
    for index, strokes in enumerate(STROKES.values()):
        got = pen.strokes(index)
        assert len(got) == len(strokes)
        np.testing.assert_array_equal(got[0], np.rint(strokes[0]))


def test_every_rendering_is_the_same_for_the_same_seed_and_differs_for_another(pen):
    indices = np.arange(len(pen))

    def digest(*made) -> str:
        return hashlib.sha256(b"".join(d for items in made for d, _, _ in items)).hexdigest()

    first = digest(
        unipen.drawings(pen, indices, 1),
        unipen.photos(pen, indices, 2),
        unipen.numbers(pen, indices, 3, 4),
    )
    again = digest(
        unipen.drawings(pen, indices, 1),
        unipen.photos(pen, indices, 2),
        unipen.numbers(pen, indices, 3, 4),
    )
    other = digest(
        unipen.drawings(pen, indices, 5),
        unipen.photos(pen, indices, 6),
        unipen.numbers(pen, indices, 7, 4),
    )
    assert first == again != other


def test_an_item_does_not_depend_on_the_rest_of_its_set(pen):
    alone = unipen.photos(pen, np.array([3]), 2)
    among = unipen.photos(pen, np.arange(len(pen)), 2)
    assert alone[0] == among[3]


def test_drawings_are_canvas_pngs_with_the_pen_on_each_background(pen):
    items = unipen.drawings(pen, np.arange(4), 0)
    assert [label for _, label, _ in items] == list(STROKES)[:4]
    white, black, transparent, light = (pixels(d) for d, _, _ in items)
    assert white.ndim == 2 and white.min() == 0 and white.max() == 255
    assert np.median(white) == 255 and np.median(black) == 0
    assert white.shape[0] == white.shape[1] and 200 <= white.shape[0] <= 400
    assert transparent.shape[2] == 4 and transparent[..., :3].max() == 0
    assert light.shape[2] == 4 and light[..., :3].min() == 255
    assert transparent[..., 3].max() == 255 and np.median(transparent[..., 3]) == 0


def test_photos_are_jpegs_of_dark_ink_on_lighter_paper(pen):
    data, label, writer = unipen.photos(pen, np.array([0]), 0)[0]
    assert data[:2] == b"\xff\xd8" and label == "0" and writer == "x/w"
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"), float)
    assert grey.shape[0] >= 240 and grey.shape[1] >= 320
    assert np.percentile(grey, 0.5) < np.median(grey) - 60


def test_numbers_take_two_to_six_digits_of_one_writer():
    samples = [(label, STROKES[label]) for label in "0124679"]
    both = pen_digits(samples, ["a/1"] * 4 + ["b/2"] * 3)
    items = unipen.numbers(both, np.arange(len(both)), 0, 12)
    for _, label, writer in items:
        assert 2 <= len(label) <= 6
        assert set(label) <= set("0124" if writer == "a/1" else "679")
    assert {writer for _, _, writer in items} == {"a/1", "b/2"}


def test_a_slanted_line_climbs_by_its_angle():
    rng = np.random.default_rng(0)
    samples = [STROKES["1"]] * 4
    flat = np.concatenate(unipen.lay_out_number(samples, np.random.default_rng(0), slant=0.0))
    steep = np.concatenate(unipen.lay_out_number(samples, rng, slant=20.0))
    # The same line turned: its principal direction is 20 degrees above the x axis.
    centred = steep - steep.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    angle = np.rad2deg(np.arctan2(-direction[1], direction[0])) % 180
    flat_direction = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)[2][0]
    flat_angle = np.rad2deg(np.arctan2(-flat_direction[1], flat_direction[0])) % 180
    assert angle - flat_angle == pytest.approx(20.0, abs=0.5)


def test_the_writer_split_is_fixed_by_the_writer_id():
    assert unipen.is_held_out_writer("gmd/kast") and not unipen.is_held_out_writer("syn/cam")
    pen = pen_digits([("0", STROKES["0"]), ("1", STROKES["1"])], "gmd/kast")
    assert list(pen.writer_indices("held-out")) == [0, 1]
    assert list(pen.writer_indices("tuning")) == []
    with pytest.raises(ValueError, match="unknown part"):
        pen.writer_indices("train")


def test_a_file_without_the_arrays_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, points=np.zeros((3, 2), np.int16))
    with pytest.raises(DatasetError, match="cannot read UNIPEN digits"):
        unipen.load(path)


# --- issue 15's failures, read by the default model's kind -------------------------------


@pytest.fixture(scope="module")
def model(mnist_unipen) -> models.Model:
    return models.train(models.DEFAULT_KIND, mnist_unipen.subset(10_000, None, seed=0), {})


def read(model: models.Model, data: bytes) -> str:
    reading = read_image(model, load_image(data, name="test"))
    return reading.text or f"<{reading.diagnosis}>"


def digit_drawing(strokes: list[np.ndarray], seed: int = 0) -> bytes:
    return unipen.drawing(strokes, np.random.default_rng(seed), background="white")


def test_the_stroke_digits_read_right(model):
    for label, strokes in STROKES.items():
        assert read(model, digit_drawing(strokes)) == label


def test_a_european_one_with_a_long_flag_reads_as_one(model):
    assert read(model, digit_drawing(FLAGGED_ONE)) == "1"


def test_a_slashed_zero_reads_as_zero(model):
    assert read(model, digit_drawing(SLASHED_ZERO)) == "0"


def test_an_open_top_four_reads_as_four(model):
    assert read(model, digit_drawing(OPEN_FOUR)) == "4"


def test_a_number_written_on_a_slanted_line_reads_whole(model):
    # Cut column by column without first turning the line level, this reads 90476.
    samples = [STROKES[d] for d in "904716"]
    data = unipen.number_drawing(samples, np.random.default_rng(0), slant=20.0, touching=False)
    assert read(model, data) == "904716"


@pytest.mark.xfail(
    strict=True,
    reason="issue 15: read as 9778: the cuts found do not part the touching 0, 1 and 6 right",
)
def test_a_cursive_number_with_touching_digits_reads_whole(model):
    samples = [STROKES[d] for d in "90716"]
    data = unipen.number_drawing(samples, np.random.default_rng(1), slant=0.0, touching=True)
    assert read(model, data) == "90716"


def _written(text: str, font_index: int) -> np.ndarray:
    font = synthetic.handwriting_fonts()[font_index]
    rendering = synthetic.render_text(text, font, np.random.default_rng(0), height=80)
    return 255 - np.rint(np.pad(rendering.ink, 40) * 255).astype(np.uint8)


def test_a_word_read_as_confident_digits_is_flagged_as_unlike_any_digit(model):
    # "total" reads 10101 at 0.95 or more: only the 't' lying far from every digit the
    # model knows shows that it is not a number.
    reading = read_page(model, _written("total", 1))
    (field,) = [f for line in reading.lines for f in line]
    assert field.confidence >= 0.95
    assert field.needs_review and "unlike any digit" in field.diagnosis


def test_written_digits_are_not_unlike_any_digit(model):
    reading = read_page(model, _written("2024", 0))
    assert reading.text == "2024"
    assert "unlike any digit" not in (reading.diagnosis or "")
    assert not any(f.needs_review for line in reading.lines for f in line)
