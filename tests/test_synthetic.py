"""Synthetic handwriting: fonts found, deterministic, and every image readable as promised."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.data.images import load_image
from digitrec.errors import DatasetError
from digitrec.testing import synthetic


def test_handwriting_fonts_are_installed_files():
    fonts = synthetic.handwriting_fonts()
    assert len(fonts) >= 3, f"install: apt-get install -y {' '.join(synthetic.FONT_PACKAGES)}"
    assert all(path.is_file() for path in fonts)


def test_missing_fonts_name_the_packages(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(synthetic, "FONT_DIRS", (tmp_path,))
    synthetic.handwriting_fonts.cache_clear()
    try:
        with pytest.raises(DatasetError, match="apt-get install -y fonts-breip"):
            synthetic.handwriting_fonts()
    finally:
        synthetic.handwriting_fonts.cache_clear()


def test_render_text_boxes_are_left_to_right_and_hold_the_ink():
    rng = np.random.default_rng(3)
    rendering = synthetic.render_text("2024", synthetic.handwriting_fonts()[0], rng, height=50)
    assert rendering.ink.dtype == np.float32 and rendering.ink.max() <= 1.0
    xs = [x for x, _, _, _ in rendering.boxes]
    assert xs == sorted(xs) and len(xs) == 4
    inside = np.zeros(rendering.ink.shape, bool)
    for x, y, w, h in rendering.boxes:
        assert 40 <= h <= 60
        inside[y : y + h, x : x + w] = True
    assert rendering.ink[~inside].max() < 0.1


def test_same_seed_same_images_other_seed_other_images():
    first = synthetic.photos(seed=5, count=3)
    assert first == synthetic.photos(seed=5, count=3)
    assert [label for _, label in first] != [label for _, label in synthetic.photos(6, 3)]
    assert synthetic.drawings(1, 4) == synthetic.drawings(1, 4)


def test_photos_are_jpegs_of_their_label_sized_like_phone_crops():
    for data, label in synthetic.photos(seed=0, count=4):
        assert data[:2] == b"\xff\xd8"
        assert label.isdigit() and 1 <= len(label) <= 5
        grey = load_image(data)
        assert grey.shape[0] >= 240 and grey.shape[1] >= 320
        assert grey.std() > 5  # ink and light vary: not a flat page


def test_drawings_cover_white_black_and_transparent_canvases():
    modes = {Image.open(io.BytesIO(data)).mode for data, _ in synthetic.drawings(2, 4)}
    assert modes == {"L", "RGBA"}
    for data, _ in synthetic.drawings(2, 4):
        grey = load_image(data)
        # After compositing the background is pure white or pure black.
        corners = {grey[0, 0], grey[0, -1], grey[-1, 0], grey[-1, -1]}
        assert corners <= {0, 255}, corners


def test_uci_images_are_larger_renderings_with_labels():
    out = synthetic.uci_images(seed=0, count=6)
    assert len(out) == 6
    for grey, label in out:
        assert grey.dtype == np.uint8 and grey.shape == (144, 144)
        assert label in "0123456789"


@pytest.mark.parametrize("name", synthetic.PAIN_POINTS)
def test_every_pain_point_loads(name):
    data, label = synthetic.pain_point(name)
    grey = load_image(data, name=name)
    assert grey.ndim == 2
    assert label == "" if name == "blank" else label.isdigit()


def test_exif_pain_point_is_stored_sideways_with_orientation_6():
    data, _ = synthetic.pain_point("exif-rotated-jpeg")
    im = Image.open(io.BytesIO(data))
    assert im.getexif()[0x0112] == 6
    stored_h, stored_w = im.size[1], im.size[0]
    assert load_image(data).shape == (stored_w, stored_h)


def test_unknown_pain_point_lists_the_choices():
    with pytest.raises(ValueError, match="blank"):
        synthetic.pain_point("nope")


def test_script_writes_images_and_labels(tmp_path: Path, capsys):
    assert synthetic.main([str(tmp_path), "--count", "2", "--seed", "4"]) == 0
    lines = (tmp_path / "labels.tsv").read_text().splitlines()
    assert lines[0] == "file\tlabel\tkind"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 3 * 2 + len(synthetic.PAIN_POINTS)
    for filename, label, _kind in rows:
        assert (tmp_path / filename).is_file()
        assert f"-{label or 'none'}." in filename
    assert "wrote" in capsys.readouterr().out
