"""Folder datasets: a user's labelled images as ``PATH/<digit>/<name>.png|jpg|jpeg|webp``.

The one reader of that layout: training on ``folder:PATH`` (:mod:`digitrec.data.datasets`),
``digitrec predict-batch folder:PATH`` (:mod:`digitrec.apps.batch`) and ``digitrec samples
import`` (:mod:`digitrec.persistence.sample_db`) all list the same files in the same order.
"""

from __future__ import annotations

from pathlib import Path

from digitrec.errors import DatasetError

# The file types a folder dataset holds: the ones :func:`digitrec.data.images.load_image`
# decodes.
READABLE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


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
