"""Issue 5's pain points, end to end through `digitrec predict` as a user runs it.

Each pain point is a deterministic image from :func:`digitrec.testing.synthetic.pain_point` (a JPEG
stored sideways with EXIF orientation 6, a transparent PNG, white strokes on black, a photo
half in shadow, a number whose digits touch, a blank page) read by a kNN model trained on
MNIST. Hostile inputs (a decompression bomb with real pixel data behind its header, a
50 MB file) must be refused with one clear line, quickly, without the memory that decoding
them would take.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import models
from digitrec.data.images import load_image
from digitrec.features.augment import distort
from digitrec.reading.framing import frame_like_mnist
from digitrec.reading.recognize import read_image
from digitrec.testing import synthetic

EXPECTED = {
    "exif-rotated-jpeg": "47",
    "transparent-png": "3",
    "white-on-black": "59",
    "shadowed-photo": "314",
    "touching-digits": "2024",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-world")


@pytest.fixture(scope="module")
def model_dir(mnist, workdir) -> Path:
    """kNN (k=3) on a stratified 10,000 of MNIST's training images, saved once for the
    module: it reads every pain point as the full 60,000 do, and loads six times faster."""
    small = mnist.subset(10_000, None, seed=0)
    return models.save(models.train("knn", small, {"n_neighbors": 3}), workdir / "knn")


@pytest.fixture(scope="module")
def pain_files(workdir) -> dict[str, Path]:
    folder = workdir / "images"
    folder.mkdir()
    files = {}
    for name in synthetic.PAIN_POINTS:
        data, _ = synthetic.pain_point(name)
        suffix = ".jpg" if data[:2] == b"\xff\xd8" else ".png"
        files[name] = folder / f"{name}{suffix}"
        files[name].write_bytes(data)
    return files


def run_cli(*args: object, home: Path) -> subprocess.CompletedProcess:
    return run_digitrec(*args, env={**os.environ, "DIGITREC_HOME": str(home)})


@pytest.fixture(scope="module")
def json_run(model_dir, pain_files, workdir) -> tuple[subprocess.CompletedProcess, Path]:
    """One `digitrec predict --json --annotate` over every pain-point image."""
    annotations = workdir / "annotations"
    done = run_cli(
        "predict",
        model_dir,
        *pain_files.values(),
        "--json",
        "--annotate",
        annotations,
        home=workdir / "home",
    )
    return done, annotations


def _readings(done: subprocess.CompletedProcess) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {Path(row["path"]).stem: row for row in rows}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pain_point_is_read_right(json_run, name):
    row = _readings(json_run[0])[name]
    assert row["text"] == EXPECTED[name]
    assert row["diagnosis"] is None


def test_blank_page_is_diagnosed_not_guessed(json_run):
    row = _readings(json_run[0])["blank"]
    assert row["text"] == ""
    assert row["digits"] == []
    assert row["diagnosis"] == "no ink found"


def test_json_has_path_text_and_digits_with_probability_and_box(json_run, pain_files):
    rows = _readings(json_run[0])
    assert set(rows) == set(pain_files)
    row = rows["touching-digits"]
    assert row["path"] == str(pain_files["touching-digits"])
    assert {"path", "text", "digits"} <= set(row)
    width, height = Image.open(pain_files["touching-digits"]).size
    lefts = []
    for digit, char in zip(row["digits"], row["text"], strict=True):
        assert {"digit", "probability", "box"} <= set(digit)
        assert str(digit["digit"]) == char
        assert 0.0 < digit["probability"] <= 1.0
        x, y, w, h = digit["box"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        lefts.append(x)
    # Touching digits are split into four boxes, in reading order.
    assert lefts == sorted(lefts) and len(set(lefts)) == 4


def test_sideways_photo_is_turned_upright_before_reading(json_run, pain_files):
    # Stored turned a quarter with EXIF orientation 6: the digits are read side by side in
    # the upright picture, and their boxes are in its coordinates.
    stored = Image.open(pain_files["exif-rotated-jpeg"])
    assert stored.getexif()[0x0112] == 6
    upright = load_image(pain_files["exif-rotated-jpeg"])
    assert upright.shape == (stored.width, stored.height)
    first, second = _readings(json_run[0])["exif-rotated-jpeg"]["digits"]
    assert second["box"][0] >= first["box"][0] + first["box"][2] // 2
    for digit in (first, second):
        x, y, w, h = digit["box"]
        assert x + w <= upright.shape[1] and y + h <= upright.shape[0]


def test_text_output_names_each_image(model_dir, pain_files, workdir):
    done = run_cli(
        "predict", model_dir, pain_files["white-on-black"], pain_files["blank"], home=workdir
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith(f"{pain_files['white-on-black']}: 59 ")
    assert second == f"{pain_files['blank']}: nothing read (no ink found)"


def test_annotate_writes_boxes_and_tile_strip(json_run, pain_files):
    done, annotations = json_run
    assert done.returncode == 0, done.stderr
    for name, path in pain_files.items():
        boxes = annotations / f"{name}.boxes.png"
        tiles = annotations / f"{name}.tiles.png"
        assert boxes.is_file() and tiles.is_file()
        # The boxes picture is the upright image (EXIF applied), in colour.
        upright = load_image(path)
        drawn = np.asarray(Image.open(boxes).convert("RGB"))
        assert drawn.shape[:2] == upright.shape
    shadow = np.asarray(Image.open(annotations / "shadowed-photo.boxes.png").convert("RGB"))
    red, blue = shadow[..., 0].astype(int), shadow[..., 2].astype(int)
    assert (red - blue > 100).any()  # the boxes are drawn in colour on a grey picture
    strip = np.asarray(Image.open(annotations / "touching-digits.tiles.png"))
    # Four 28x28 tiles with a 2-pixel frame each, enlarged 4 times.
    assert strip.shape[:2] == (32 * 4, 4 * 32 * 4)


def test_python_api_reads_the_same(model_dir):
    model = models.load(model_dir)
    for name, label in EXPECTED.items():
        data, _ = synthetic.pain_point(name)
        assert read_image(model, load_image(data)).text == label
    blank, _ = synthetic.pain_point("blank")
    assert read_image(model, load_image(blank)).diagnosis == "no ink found"


# --- hostile inputs ----------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def bilevel_bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` white pixels: tiny on disk, huge decoded.

    Every row is compressed for real (a filter byte and ``width / 8`` bytes), so a decoder
    that trusted the header would have to expand all of it.
    """
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 22) // len(row))
    piece = row * rows_per_piece
    parts = []
    for _ in range(height // rows_per_piece):
        parts.append(compressor.compress(piece))
    parts.append(compressor.compress(row * (height % rows_per_piece)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def hostile_files(workdir) -> dict[str, Path]:
    folder = workdir / "hostile"
    folder.mkdir()
    files = {
        # 30,000 x 30,000 = 900 megapixels (past Pillow's own bomb limit) in ~110 KB.
        "bomb": folder / "bomb.png",
        # 9,000 x 9,000 = 81 megapixels: under Pillow's limit, over digitrec's 40.
        "big": folder / "big.png",
        "huge": folder / "huge.jpg",
    }
    files["bomb"].write_bytes(bilevel_bomb_png(30_000, 30_000))
    files["big"].write_bytes(bilevel_bomb_png(9_000, 9_000))
    with open(files["huge"], "wb") as handle:
        # A real 50 MB file: a JPEG signature, then data.
        handle.write(b"\xff\xd8\xff\xe0" + bytes(50_000_000 - 4))
    return files


def test_hostile_files_are_small_but_would_be_huge(hostile_files):
    assert hostile_files["bomb"].stat().st_size < 200_000
    assert hostile_files["big"].stat().st_size < 200_000
    assert hostile_files["huge"].stat().st_size == 50_000_000


def test_cli_refuses_bomb_and_huge_upload_with_one_line_each(model_dir, hostile_files, workdir):
    paths = [hostile_files[name] for name in ("bomb", "big", "huge")]
    done = run_cli("predict", model_dir, *paths, home=workdir)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr
    bomb, big, huge = lines
    assert bomb.startswith(f"error: {paths[0]}: image header declares over ")
    assert "megapixel limit" in bomb
    assert big == (
        f"error: {paths[1]}: image is 9000x9000 pixels (81.0 megapixels), "
        "over the 40.0 megapixel limit"
    )
    assert huge == f"error: {paths[2]}: file is 50.0 MB, over the 20.0 MB limit"


MEASURE = """
import resource, sys
from digitrec.errors import ImageError
from digitrec.data.images import load_image

def peak_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kb()
source = sys.argv[1]
if sys.argv[2] == "bytes":
    with open(source, "rb") as handle:
        source = handle.read()
    before = peak_kb()
try:
    load_image(source)
except ImageError as exc:
    print("refused", exc)
print("growth_kb", peak_kb() - before)
"""


@pytest.mark.parametrize(
    ("name", "how"),
    [("bomb", "path"), ("big", "path"), ("huge", "path"), ("bomb", "bytes"), ("huge", "bytes")],
)
def test_refusal_takes_no_memory_to_speak_of(hostile_files, name, how):
    # In a fresh process, so the peak resident size is this refusal's own. Decoding would
    # take 110 MB (bomb, 1 bit per pixel) to 900 MB (as greyscale); 16 MB is headroom for
    # Pillow's imports and header parsing.
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(hostile_files[name]), how],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    refused, growth = done.stdout.strip().splitlines()
    assert refused.startswith("refused ")
    assert int(growth.split()[1]) < 16 * 1024


# --- training-time robustness (digitrec.nets.robust) --------------------------------------------


def test_distort_is_deterministic_and_framed_like_mnist(mnist):
    images = mnist.X_train[:200]
    first = distort(images, np.random.default_rng(7))
    again = distort(images, np.random.default_rng(7))
    other = distort(images, np.random.default_rng(8))
    assert first.dtype == np.uint8 and first.shape == images.shape
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, images)
    for tile in first:
        ink = tile > 32
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        # Longer side of the box 20 px (give or take the faint resampled edge), centred.
        assert 18 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22
        weights = tile.astype(float)
        centre_y = weights.sum(axis=1) @ np.arange(28) / weights.sum()
        centre_x = weights.sum(axis=0) @ np.arange(28) / weights.sum()
        assert abs(centre_y - 14) <= 1.0 and abs(centre_x - 14) <= 1.0


def test_frame_like_mnist_keeps_mnist_digits_nearly_as_they_are(mnist):
    # MNIST itself is framed this way, so reframing moves almost nothing.
    images = mnist.X_test[:100]
    reframed = np.stack([frame_like_mnist(tile) for tile in images])
    change = np.abs(reframed.astype(int) - images.astype(int)).mean()
    assert change < 0.25 * images.mean()
    assert not frame_like_mnist(np.zeros((28, 28), np.uint8)).any()


def test_distort_refuses_bad_parameters():
    from digitrec.errors import ParameterError

    tiles = np.zeros((1, 28, 28), np.uint8)
    with pytest.raises(ParameterError, match="max_degrees"):
        distort(tiles, np.random.default_rng(0), max_degrees=90)
    with pytest.raises(ParameterError, match="thicker and thinner"):
        distort(tiles, np.random.default_rng(0), thicker=0.8, thinner=0.5)
    with pytest.raises(ParameterError, match="28x28"):
        distort(np.zeros((1, 8, 8), np.uint8), np.random.default_rng(0))


# --- the model kinds for real-world handwriting ----------------------------------------------


def test_knn_idm_kind_round_trips_through_the_model_store(mnist, tmp_path):
    small = mnist.subset(600, 100, seed=0)
    params = {"n_candidates": 20, "batch_size": 50}
    model = models.train("knn-idm", small, params)
    directory = models.save(model, tmp_path / "idm")
    loaded = models.load(directory)
    assert loaded.kind == "knn-idm" and loaded.params["n_candidates"] == 20
    assert np.array_equal(loaded.predict(small.X_test), model.predict(small.X_test))
    assert (model.predict(small.X_test) == small.y_test).mean() > 0.8


def test_knn_idm_kind_refuses_bad_parameters_before_training():
    from digitrec.errors import ParameterError

    with pytest.raises(ParameterError, match="warp"):
        models.build("knn-idm", {"warp": 9})


def test_cnn_robust_kind_trains_saves_and_loads(mnist, tmp_path):
    pytest.importorskip("torch")
    small = mnist.subset(400, 100, seed=0)
    params = {"epochs": 1, "batch_size": 32, "n_threads": 1, "copies": 1}
    model = models.train("cnn-robust", small, params)
    loaded = models.load(models.save(model, tmp_path / "cnn-robust"))
    assert loaded.params["copies"] == 1
    np.testing.assert_allclose(
        loaded.predict_proba(small.X_test), model.predict_proba(small.X_test), atol=1e-5
    )


def test_robust_cnn_validates_on_originals_and_trains_on_their_copies_only():
    from digitrec.nets.robust import RobustCNNClassifier

    estimator = RobustCNNClassifier(copies=2, validation_fraction=0.2)
    labels = np.repeat(np.arange(10), 10)
    train, val = estimator.validation_split(np.tile(labels, 3), seed=0)
    originals = set(range(100))
    assert set(val) <= originals and len(val) == 20
    expected = {i + k * 100 for i in set(train) & originals for k in range(3)}
    assert set(train) == expected
    held_out_copies = {i + k * 100 for i in val for k in (1, 2)}
    assert not held_out_copies & set(train)
