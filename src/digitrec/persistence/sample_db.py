"""The user's own labelled digits: a SQLite database and folder export/import.

When a reading is wrong the user says what the digit really is; the 28x28 tile the model saw
is stored with that label in ``samples.sqlite`` in the data directory.
:class:`digitrec.neighbors.personal.PersonalModel` adds them to a model's references.

Every sample has an owner: a user (a browser's random identity, or a name given with
``--user`` or a header) or the shared set (``SHARED``, the empty name), which every user's
answers include. A user's corrections change only that user's answers until an operator
merges them into the shared set (:meth:`SampleStore.merge`, ``digitrec samples merge``).
Databases from before owners (version 1) are migrated in place: their samples become the
shared set, since they already changed everyone's answers.
"""

from __future__ import annotations

import contextlib
import io
import re
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
SCHEMA_VERSION = 2
SHARED = ""  # the owner of the shared set
# A user name: what a header, a cookie or a command-line option may carry.
_OWNER = re.compile(r"[A-Za-z0-9_.-]{1,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    tile BLOB NOT NULL CHECK (length(tile) = 784),
    created TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
"""
# Version 2 on top of either version: owners, and a revision per owner so that a server
# reloads only the owners whose samples changed.
_OWNERS = """
CREATE INDEX IF NOT EXISTS samples_by_owner ON samples (owner, id);
CREATE TABLE IF NOT EXISTS revisions (owner TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SampleError(DigitrecError):
    """A sample is malformed, or the sample database cannot be used."""


class SampleStoreUnavailable(SampleError):
    """The database cannot be read or written now (locked, unreadable, or its disk failed):
    the server's problem, not the request's."""

    http_status = 503


class SampleLimitReached(SampleError):
    """A user already stores as many samples as one user may."""

    http_status = 409


def checked_owner(owner: str) -> str:
    """``owner`` if it is a valid user name (1-64 of ``A-Z a-z 0-9 _ . -``) or ``SHARED``."""
    if owner == SHARED or (isinstance(owner, str) and _OWNER.fullmatch(owner)):
        return owner
    raise SampleError(
        f"a user name is 1-64 letters, digits, '_', '.' or '-', got {str(owner)[:80]!r}"
    )


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
    """One stored digit: its id, the label the user gave, the 28x28 tile, when (UTC ISO),
    and whose it is (``SHARED`` for the shared set)."""

    id: int
    label: int
    tile: np.ndarray
    created: str
    owner: str = SHARED


class SampleStore:
    """The sample database. Every call opens its own connection, so one store can be used
    from many threads (a web server's workers) and by other processes at the same time.

    A database deleted while in use is created again, empty, by the next call; one that is
    locked longer than ``timeout`` seconds, or unreadable, raises
    :class:`SampleStoreUnavailable`."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._create()

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # A journal left by a deleted database belongs to it: replayed into the new file
            # it would write the old pages into an empty database.
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        with self._open() as db:
            # WAL lets a server read while the command line imports; the mode is stored in
            # the file, so setting it once here is enough.
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SampleError(
                    f"{self.path}: sample database version {version}, "
                    f"this digitrec reads {SCHEMA_VERSION}"
                )
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
            if "owner" not in columns:  # version 1: its samples become the shared set
                db.execute("ALTER TABLE samples ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            db.executescript(_OWNERS)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            self._create()
        with self._open(timeout) as db:
            yield db

    @contextlib.contextmanager
    def _open(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout if timeout is None else timeout)
        except sqlite3.Error as exc:
            raise SampleStoreUnavailable(
                f"{self.path}: cannot open the sample database ({exc})"
            ) from None
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        except sqlite3.DatabaseError as exc:
            raise SampleStoreUnavailable(
                f"{self.path}: the sample database cannot be used now ({exc})"
            ) from None
        finally:
            db.close()

    def add(self, tile: np.ndarray, label: int, owner: str = SHARED) -> Sample:
        return self.add_many([tile], [label], owner)[0]

    def add_many(
        self,
        tiles: list[np.ndarray],
        labels: list[int],
        owner: str = SHARED,
        limit: int | None = None,
    ) -> list[Sample]:
        """Store several samples of ``owner`` in one transaction: all of them or none.
        With ``limit``, refuse (:class:`SampleLimitReached`) what would take the owner past
        ``limit`` samples."""
        owner = checked_owner(owner)
        rows = [
            (checked_label(label), checked_tile(tile).tobytes(), _now(), owner)
            for tile, label in zip(tiles, labels, strict=True)
        ]
        with self._connect() as db:
            if limit is not None:
                held = _count(db, owner)
                if held + len(rows) > limit:
                    raise SampleLimitReached(
                        f"{_whose(owner)} {held} samples, the most one user may store is "
                        f"{limit}; delete some first"
                    )
            ids = [
                db.execute(
                    "INSERT INTO samples (label, tile, created, owner) VALUES (?, ?, ?, ?)", row
                ).lastrowid
                for row in rows
            ]
            _bump_revision(db, owner)
        return [
            Sample(int(i), label, _tile_from_blob(blob), created, owner)
            for i, (label, blob, created, owner) in zip(ids, rows, strict=True)
        ]

    def get(self, sample_id: int, owner: str | None = None) -> Sample | None:
        """The sample, if it exists (and belongs to ``owner`` when one is given)."""
        if not _storable_id(sample_id):
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, label, tile, created, owner FROM samples WHERE id = ?",
                (int(sample_id),),
            ).fetchone()
        if row is None or (owner is not None and row[4] != owner):
            return None
        return _sample_from_row(row)

    def delete(self, sample_id: int, owner: str | None = None) -> bool:
        """Remove a sample (only if it belongs to ``owner``, when one is given); False if
        there was none."""
        if not _storable_id(sample_id):
            return False
        with self._connect() as db:
            row = db.execute("SELECT owner FROM samples WHERE id = ?", (int(sample_id),)).fetchone()
            if row is None or (owner is not None and row[0] != owner):
                return False
            db.execute("DELETE FROM samples WHERE id = ?", (int(sample_id),))
            _bump_revision(db, row[0])
        return True

    def all(self, owner: str | None = SHARED) -> list[Sample]:
        """The samples of ``owner`` (by default the shared set; None: everyone's), oldest
        first."""
        query = "SELECT id, label, tile, created, owner FROM samples"
        with self._connect() as db:
            if owner is None:
                rows = db.execute(f"{query} ORDER BY id").fetchall()
            else:
                rows = db.execute(f"{query} WHERE owner = ? ORDER BY id", (owner,)).fetchall()
        return [_sample_from_row(row) for row in rows]

    def count(self, owner: str | None = None) -> int:
        """How many samples ``owner`` has (None: how many are stored in all)."""
        with self._connect() as db:
            if owner is None:
                return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
            return _count(db, owner)

    def writable_count(self, timeout: float = 1.0) -> int:
        """:meth:`count`, after checking that a write could start within ``timeout`` seconds
        (readers of a WAL database go on while a writer holds it; writers wait)."""
        with self._connect(min(self.timeout, timeout)) as db:
            db.execute("BEGIN IMMEDIATE")
            count = int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
            db.rollback()
        return count

    def owners(self) -> dict[str, int]:
        """Every owner with samples, and how many each has."""
        with self._connect() as db:
            rows = db.execute("SELECT owner, count(*) FROM samples GROUP BY owner").fetchall()
        return {str(owner): int(n) for owner, n in rows}

    def merge(self, owner: str) -> int:
        """Move every sample of ``owner`` into the shared set, where it changes everyone's
        answers; how many moved."""
        if checked_owner(owner) == SHARED:
            raise SampleError("name the user whose samples join the shared set")
        with self._connect() as db:
            moved = db.execute(
                "UPDATE samples SET owner = ? WHERE owner = ?", (SHARED, owner)
            ).rowcount
            if moved:
                _bump_revision(db, owner)
                _bump_revision(db, SHARED)
        return int(moved)

    def revision(self, owner: str | None = None) -> int:
        """A number that changes whenever any process adds or deletes a sample (of
        ``owner``, when one is given)."""
        with self._connect() as db:
            if owner is None:
                row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            else:
                row = db.execute("SELECT value FROM revisions WHERE owner = ?", (owner,)).fetchone()
        return int(row[0]) if row is not None else 0

    def revisions(self, owners: list[str]) -> dict[str, int]:
        """:meth:`revision` of several owners from one query."""
        marks = ", ".join("?" * len(owners))
        with self._connect() as db:
            rows = db.execute(
                f"SELECT owner, value FROM revisions WHERE owner IN ({marks})", owners
            ).fetchall()
        found = {str(owner): int(value) for owner, value in rows}
        return {owner: found.get(owner, 0) for owner in owners}


def _storable_id(sample_id: int) -> bool:
    # SQLite integers are 64-bit; a larger id (from a URL) cannot name a sample.
    return -(2**63) <= int(sample_id) < 2**63


def _bump_revision(db: sqlite3.Connection, owner: str) -> None:
    db.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")
    db.execute(
        "INSERT INTO revisions (owner, value) VALUES (?, 1) "
        "ON CONFLICT (owner) DO UPDATE SET value = value + 1",
        (owner,),
    )


def _count(db: sqlite3.Connection, owner: str) -> int:
    return int(db.execute("SELECT count(*) FROM samples WHERE owner = ?", (owner,)).fetchone()[0])


def _whose(owner: str) -> str:
    return "the shared set has" if owner == SHARED else f"user {owner} has"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tile_from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(TILE, TILE).copy()


def _sample_from_row(row: tuple) -> Sample:
    sample_id, label, blob, created, owner = row
    return Sample(int(sample_id), int(label), _tile_from_blob(blob), str(created), str(owner))


# --- folder datasets ----------------------------------------------------------------------


def export_folder(store: SampleStore, directory: Path, owner: str = SHARED) -> list[Path]:
    """Write every sample of ``owner`` as ``DIRECTORY/<label>/sample-<id>.png`` (a folder
    dataset that ``digitrec train --dataset folder:DIRECTORY`` reads). Each file is written
    atomically; running it again rewrites the same names."""
    written = []
    for sample in store.all(owner):
        path = Path(directory) / str(sample.label) / f"sample-{sample.id}.png"
        atomic_write_bytes(path, encode_png(sample.tile))
        written.append(path)
    return written


@dataclass(frozen=True)
class ImportResult:
    added: list[Sample]
    skipped: list[Path]  # files whose tile and label are already stored


def import_folder(store: SampleStore, directory: Path, owner: str = SHARED) -> ImportResult:
    """Store the images of a folder dataset ``DIRECTORY/<digit>/*.png|jpg|webp`` as samples
    of ``owner``.

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
    owner = checked_owner(owner)
    known = {(s.label, s.tile.tobytes()) for s in store.all(owner)}
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
    added = store.add_many(tiles, labels, owner) if tiles else []
    return ImportResult(added, skipped)
