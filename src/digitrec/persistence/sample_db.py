"""The user's own labelled digits: a SQLite database and folder export/import.

When a reading is wrong the user says what the digit really is; the 28x28 tile the model saw
is stored with that label in ``samples.sqlite`` in the data directory.
:class:`digitrec.neighbors.personal.PersonalModel` adds them to a model's references.
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import config
from digitrec.errors import DigitrecError, ImageError
from digitrec.persistence.atomic import atomic_write_bytes
from digitrec.reading.framing import TILE

DATABASE = "samples.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    tile BLOB NOT NULL CHECK (length(tile) = 784),
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
"""


class SampleError(DigitrecError):
    """A sample is malformed, or the sample database cannot be used."""


def database_path(home: Path | None = None) -> Path:
    """``samples.sqlite`` in the data directory (``config.home()`` unless given)."""
    return Path(home if home is not None else config.home()) / DATABASE


def encode_png(pixels: np.ndarray) -> bytes:
    """A uint8 greyscale array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def checked_tile(tile: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 copy of ``tile``; anything else is a :class:`SampleError`."""
    array = np.asarray(tile)
    if array.shape != (TILE, TILE):
        raise SampleError(f"a sample tile is 28x28 pixels, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
            raise SampleError(f"a sample tile holds uint8 values, got {array.dtype}")
        array = array.astype(np.uint8)
    if not array.any():
        raise SampleError("a sample tile must have some ink; this one is blank")
    return np.ascontiguousarray(array)


def checked_label(label: object) -> int:
    # bool is an int in Python; True is not a digit.
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or not 0 <= label <= 9:
        raise SampleError(f"a sample label is a digit 0-9, got {label!r}")
    return int(label)


@dataclass(frozen=True)
class Sample:
    """One stored digit: its id, the label the user gave, the 28x28 tile, when (UTC ISO)."""

    id: int
    label: int
    tile: np.ndarray
    created: str


class SampleStore:
    """The sample database. Every call opens its own connection, so one store can be used
    from many threads (a web server's workers) and by other processes at the same time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # WAL lets a server read while the command line imports; the mode is stored in
            # the file, so setting it once here is enough.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise SampleError(
                    f"{self.path}: sample database version {version}, "
                    f"this digitrec reads {SCHEMA_VERSION}"
                )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as exc:
            raise SampleError(f"{self.path}: cannot open the sample database ({exc})") from None
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        except sqlite3.DatabaseError as exc:
            raise SampleError(f"{self.path}: not a usable sample database ({exc})") from None
        finally:
            db.close()

    def add(self, tile: np.ndarray, label: int) -> Sample:
        return self.add_many([tile], [label])[0]

    def add_many(self, tiles: list[np.ndarray], labels: list[int]) -> list[Sample]:
        """Store several samples in one transaction: all of them or none."""
        rows = [
            (checked_label(label), checked_tile(tile).tobytes(), _now())
            for tile, label in zip(tiles, labels, strict=True)
        ]
        with self._connect() as db:
            ids = [
                db.execute(
                    "INSERT INTO samples (label, tile, created) VALUES (?, ?, ?)", row
                ).lastrowid
                for row in rows
            ]
            _bump_revision(db)
        return [
            Sample(int(i), label, _tile_from_blob(blob), created)
            for i, (label, blob, created) in zip(ids, rows, strict=True)
        ]

    def get(self, sample_id: int) -> Sample | None:
        if not _storable_id(sample_id):
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, label, tile, created FROM samples WHERE id = ?", (int(sample_id),)
            ).fetchone()
        return None if row is None else _sample_from_row(row)

    def delete(self, sample_id: int) -> bool:
        """Remove a sample; False if there was none with that id."""
        if not _storable_id(sample_id):
            return False
        with self._connect() as db:
            deleted = db.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),)).rowcount
            if deleted:
                _bump_revision(db)
        return bool(deleted)

    def all(self) -> list[Sample]:
        """Every sample, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT id, label, tile, created FROM samples ORDER BY id").fetchall()
        return [_sample_from_row(row) for row in rows]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])

    def revision(self) -> int:
        """A number that changes whenever any process adds or deletes a sample."""
        with self._connect() as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])


def _storable_id(sample_id: int) -> bool:
    # SQLite integers are 64-bit; a larger id (from a URL) cannot name a sample.
    return -(2**63) <= int(sample_id) < 2**63


def _bump_revision(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tile_from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(TILE, TILE).copy()


def _sample_from_row(row: tuple) -> Sample:
    sample_id, label, blob, created = row
    return Sample(int(sample_id), int(label), _tile_from_blob(blob), str(created))


# --- folder datasets ----------------------------------------------------------------------


def export_folder(store: SampleStore, directory: Path) -> list[Path]:
    """Write every sample as ``DIRECTORY/<label>/sample-<id>.png`` (a folder dataset that
    ``digitrec train --dataset folder:DIRECTORY`` reads). Each file is written atomically;
    running it again rewrites the same names."""
    written = []
    for sample in store.all():
        path = Path(directory) / str(sample.label) / f"sample-{sample.id}.png"
        atomic_write_bytes(path, encode_png(sample.tile))
        written.append(path)
    return written


@dataclass(frozen=True)
class ImportResult:
    added: list[Sample]
    skipped: list[Path]  # files whose tile and label are already stored


def import_folder(store: SampleStore, directory: Path) -> ImportResult:
    """Store the images of a folder dataset ``DIRECTORY/<digit>/*.png|jpg|webp``.

    Every image becomes an MNIST-format tile the way ``folder:`` datasets are read (tiles that
    already are MNIST-format stay as they are, so an export imports back unchanged). Images
    identical to a stored sample with the same label are skipped, so importing twice adds
    nothing. All files are read before any is stored: one unreadable file stores none.
    """
    from digitrec.data.folders import labelled_image_files
    from digitrec.data.images import load_image
    from digitrec.reading.framing import to_mnist_tile

    directory = Path(directory)
    if not directory.is_dir():
        raise SampleError(f"{directory} is not a directory")
    known = {(s.label, s.tile.tobytes()) for s in store.all()}
    tiles, labels, skipped = [], [], []
    for path, digit in labelled_image_files(directory):
        try:
            tile = to_mnist_tile(load_image(path))
        except ImageError as exc:
            # to_mnist_tile's "no ink found" does not name the file; say which it was.
            raise SampleError(f"{path}: {str(exc).removeprefix(f'{path}: ')}") from None
        key = (digit, tile.tobytes())
        if key in known:
            skipped.append(path)
            continue
        known.add(key)
        tiles.append(tile)
        labels.append(digit)
    added = store.add_many(tiles, labels) if tiles else []
    return ImportResult(added, skipped)
