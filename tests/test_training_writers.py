"""The default model's training data: MNIST plus other writers' digits (``mnist+unipen``).

The pen digits shipped with digitrec, their training tiles (drawn and framed by the reading
path), the slashed and flagged MNIST copies, and the cached dataset that joins them.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_unipen import FLAGGED_ONE, SLASHED_ZERO, STROKES, pen_digits

from digitrec.data import datasets
from digitrec.data import pen_digits as shipped
from digitrec.errors import DatasetError
from digitrec.features.styles import flagged_one, slashed_zero, styled_copies
from digitrec.reading.framing import TILE
from digitrec.reading.recognize import find_digits


def test_the_shipped_pen_digits_are_unipens_with_their_credit():
    digits = shipped.load()
    assert len(digits) == 6533
    assert set(np.unique(digits.label).tolist()) == set(range(10))
    assert len(digits.writer_indices("tuning")) == 3705
    assert len(digits.writer_indices("held-out")) == 2828
    credit = (shipped.SHIPPED.parent / "README.md").read_text()
    assert "CC BY 4.0" in credit and "10.5281/zenodo.1195803" in credit


def test_training_tiles_are_each_digit_drawn_and_framed_by_the_reading_path():
    pen = pen_digits([(label, strokes) for label, strokes in STROKES.items()])
    tiles, labels = shipped.training_tiles(pen, np.arange(len(pen)), renderings=2, seed=3)
    assert tiles.shape == (2 * len(pen), TILE, TILE) and tiles.dtype == np.uint8
    assert labels.tolist() == [int(d) for d in STROKES for _ in range(2)]
    # Two renderings of one digit differ (another pen and size) ...
    assert not np.array_equal(tiles[0], tiles[1])
    # ... and a tile is what reading a picture of it gives: reading it again changes nothing.
    again = find_digits(tiles[0])
    np.testing.assert_array_equal(again.tiles[0], tiles[0])
    same, _ = shipped.training_tiles(pen, np.arange(len(pen)), renderings=2, seed=3)
    np.testing.assert_array_equal(same, tiles)


def _upright_stroke(height: int = 20) -> np.ndarray:
    tile = np.zeros((TILE, TILE), np.uint8)
    tile[4 : 4 + height, 13:16] = 255
    return tile


def _ring() -> np.ndarray:
    import cv2

    tile = np.zeros((TILE, TILE), np.uint8)
    cv2.ellipse(tile, (14, 14), (6, 9), 0, 0, 360, 255, 2)
    return tile


def test_a_flag_is_drawn_down_to_the_left_of_the_ones_top():
    def left_of_stem_at_top(tile: np.ndarray) -> bool:
        ink = tile > 64
        rows, cols = np.nonzero(ink)
        top = rows.min()
        stem_left = cols[(rows > top + 9) & (rows < top + 15)].min()
        return bool(ink[top : top + 8, : stem_left - 1].any())

    plain = _upright_stroke()
    assert not left_of_stem_at_top(find_digits(plain).tiles[0])
    assert left_of_stem_at_top(flagged_one(plain, np.random.default_rng(0)))


def test_a_slash_crosses_the_zero_and_leaves_its_ring():
    ring = _ring()
    slashed = slashed_zero(ring, np.random.default_rng(0)) > 64
    plain = find_digits(ring).tiles[0] > 64
    # The ring's hole is crossed: the centre is ink only in the slashed zero.
    assert not plain[12:16, 12:16].any()
    assert slashed[12:16, 12:16].any()


def test_styled_copies_come_from_zeros_and_ones_and_are_the_same_for_a_seed():
    images = np.stack([_ring(), _upright_stroke(), _ring(), _upright_stroke(18)])
    labels = np.array([0, 1, 0, 1], np.uint8)
    tiles, styled_labels = styled_copies(images, labels, zeros=2, ones=1, seed=4)
    assert tiles.shape == (3, TILE, TILE) and styled_labels.tolist() == [0, 0, 1]
    again, _ = styled_copies(images, labels, zeros=2, ones=1, seed=4)
    np.testing.assert_array_equal(tiles, again)


def test_mnist_unipen_is_mnist_plus_the_extra_tiles_and_keeps_mnists_test_set(
    mnist, mnist_unipen
):
    n_mnist = len(mnist.y_train)
    assert mnist_unipen.name == "mnist+unipen"
    np.testing.assert_array_equal(mnist_unipen.X_train[:n_mnist], mnist.X_train)
    np.testing.assert_array_equal(mnist_unipen.X_test, mnist.X_test)
    extra = mnist_unipen.y_train[n_mnist:]
    # Two renderings of nearly every tuning writer's digit, plus the styled copies.
    pen = len(extra) - datasets.STYLED_ZEROS - datasets.STYLED_ONES
    assert 0.98 * 2 * 3705 <= pen <= 2 * 3705
    assert np.bincount(extra, minlength=10).min() > 0


def test_the_extra_tiles_are_made_once_and_made_again_when_the_cache_is_bad(
    mnist, monkeypatch, digitrec_home
):
    calls = []
    pen = pen_digits([("1", FLAGGED_ONE), ("0", SLASHED_ZERO)], ["syn/cam", "syn/cam"])
    monkeypatch.setattr(shipped, "load", lambda: (calls.append(1), pen)[1])
    monkeypatch.setattr(datasets, "_extra_tiles_key", lambda: "test")
    monkeypatch.setattr(datasets, "STYLED_ZEROS", 3)
    monkeypatch.setattr(datasets, "STYLED_ONES", 2)
    for old in (digitrec_home / "datasets").glob("extra-tiles-*"):
        old.unlink()
    first = datasets.load("mnist+unipen")
    second = datasets.load("mnist+unipen")
    assert len(calls) == 1
    np.testing.assert_array_equal(first.X_train, second.X_train)
    (digitrec_home / "datasets" / "extra-tiles-test.npz").write_bytes(b"not a zip")
    third = datasets.load("mnist+unipen")
    assert len(calls) == 2
    np.testing.assert_array_equal(first.X_train, third.X_train)


def test_an_unknown_dataset_names_the_new_one():
    with pytest.raises(DatasetError, match="mnist\\+unipen"):
        datasets.load("emnist")
