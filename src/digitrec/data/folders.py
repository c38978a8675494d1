"""Folders of images: labelled datasets (``PATH/<digit>/<name>.png|jpg|...``), and the
files a folder or a glob pattern names for batch reading.

The one reader of that layout: training on ``folder:PATH`` (:mod:`digitrec.data.datasets`),
``digitrec predict-batch folder:PATH`` (:mod:`digitrec.apps.batch`) and ``digitrec samples
import`` (:mod:`digitrec.persistence.sample_db`) all list the same files in the same order.

Listing never follows a link to a directory (a link loop would never end, and a linked
folder would list its files twice) and lists each file once, however many names lead to it.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
from pathlib import Path

from digitrec.errors import DatasetError

# The file types a folder dataset holds: the ones :func:`digitrec.data.images.load_image`
# decodes. It recognises a file by its content, so JPEG's other extensions (.jfif, .jpe,
# .jif) are JPEGs here too.
READABLE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".jif", ".webp"})


def labelled_image_files(path: Path) -> list[tuple[Path, int]]:
    """Every image file of the folder dataset at ``path`` with its digit, digit by digit
    and by name within a digit. Folders other than ``0`` to ``9`` and files of other types
    are ignored; DatasetError if ``path`` is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"folder dataset {str(path)!r} is not a directory")
    return [
        (file, digit)
        for digit in range(10)
        if (path / str(digit)).is_dir()
        for file in sorted((path / str(digit)).iterdir())
        if file.suffix.lower() in READABLE_SUFFIXES and file.is_file()
    ]


def files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (links to files included), sorted, skipping
    hidden files and folders; links to folders are not entered."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, name) for name in files if not name.startswith(".")]
    return _each_file_once(sorted(found))


def files_matching(pattern: str) -> list[Path]:
    """The regular files a glob pattern names, as ``glob.glob(pattern, recursive=True)``
    would list them (``**`` for any number of folders, hidden names only when the pattern
    spells the dot) but without entering links to folders, each file once, sorted."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    rest = parts[fixed:]
    if not rest:
        return _each_file_once([root]) if _is_file(root) else []
    matchers = [None if part == "**" else _segment(part) for part in rest]
    found = []
    for current, dirs, files in os.walk(root, followlinks=False):
        relative = Path(current).relative_to(root).parts
        found += [
            Path(current, name) for name in files if _matches(matchers, rest, (*relative, name))
        ]
        # Folders that no continuation of the pattern can reach are not entered.
        dirs[:] = sorted(d for d in dirs if _can_continue(matchers, rest, (*relative, d)))
    return _each_file_once(sorted(found))


def _segment(part: str) -> re.Pattern:
    return re.compile(fnmatch.translate(part))


def _hidden_allowed(part: str, name: str) -> bool:
    return not name.startswith(".") or part.startswith(".")


def _matches(matchers, parts, names) -> bool:
    """Whether the path ``names`` (segments) matches the whole pattern."""
    if not matchers:
        return not names
    if matchers[0] is None:  # "**": zero or more non-hidden folders
        if len(matchers) == 1:  # last, it also names the files below them
            return bool(names) and not any(name.startswith(".") for name in names)
        if _matches(matchers[1:], parts[1:], names):
            return True
        return (
            len(names) > 1 and not names[0].startswith(".") and _matches(matchers, parts, names[1:])
        )
    return (
        bool(names)
        and _hidden_allowed(parts[0], names[0])
        and matchers[0].match(names[0]) is not None
        and _matches(matchers[1:], parts[1:], names[1:])
    )


def _can_continue(matchers, parts, names) -> bool:
    """Whether a folder at ``names`` can still lead to a match (a prefix of the pattern)."""
    if not names:
        return bool(matchers)
    if not matchers:
        return False
    if matchers[0] is None:
        if not names[0].startswith(".") and _can_continue(matchers, parts, names[1:]):
            return True
        return _can_continue(matchers[1:], parts[1:], names)
    return (
        _hidden_allowed(parts[0], names[0])
        and matchers[0].match(names[0]) is not None
        and _can_continue(matchers[1:], parts[1:], names[1:])
    )


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _each_file_once(paths: list[Path]) -> list[Path]:
    """Regular files only, the first name of each file kept (hard links and links to
    files found under several names count once)."""
    seen, kept = set(), []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue  # a dangling link
        if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            kept.append(path)
    return kept
