"""Atomic file writes: a file appears complete or not at all, even if the process dies.

Everything digitrec writes (model files, datasets, reports, plots, annotated images, the
batch parts) goes through these, so a crash or a full disk never leaves half a file where a
reader expects a whole one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from digitrec.errors import DigitrecError


class WriteError(DigitrecError, OSError):
    """A file or folder cannot be written where it was asked for (a parent is a file, no
    permission, a read-only or virtual file system). Still an :class:`OSError`, so code that
    handles file-system failures keeps handling it; a :class:`DigitrecError`, so the CLI
    reports it in one line."""


def cannot_write(path: Path, exc: OSError) -> WriteError:
    """The one-line error for an OSError met while writing ``path``."""
    reason = exc.strerror or str(exc)
    return WriteError(f"cannot write {path}: {reason}")


def make_dirs(directory: Path) -> None:
    """``directory`` and its parents, as a :class:`WriteError` naming it if that fails."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir(exist_ok=True) raises this when it is a file
        raise WriteError(f"cannot write {directory}: a file is in the way") from None
    except OSError as exc:
        raise cannot_write(directory, exc) from None


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (renames, new files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise cannot_write(path, exc) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
