"""Reference-set augmentation: shifted and slightly rotated copies of training images.

A nearest-neighbour classifier only knows the positions and slants its references show;
adding copies of each reference moved by a pixel (or turned by a few degrees) lets a query
match a training digit drawn slightly off-centre. Every copy remembers the index of the
image it came from, so a neighbour found among the copies is still explained by a real
training image.

The copies are laid out **origin-major**: copy ``j`` of image ``i`` sits at row
``i * n_copies + j``, and copy 0 is the unchanged image. A search over the augmented set can
therefore reduce the distances of one image's copies with a reshape
``(n, n_copies)`` and a ``min``.
"""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.errors import ParameterError
from digitrec.features.transformers import as_images

__all__ = ["augment", "augmentation_transforms"]


def augmentation_transforms(
    shift: int = 1, rotations: tuple[float, ...] = (), diagonal: bool = True
) -> list[tuple[int, int, float]]:
    """The ``(dy, dx, degrees)`` of every copy, the identity ``(0, 0, 0.0)`` first.

    ``shift`` moves by ``-shift..shift`` pixels on each axis; ``diagonal=False`` keeps only
    the moves along one axis (4 * shift + 1 positions instead of (2 * shift + 1) ** 2).
    Each angle in ``rotations`` adds one rotated, unshifted copy.
    """
    if shift < 0:
        raise ParameterError(f"shift must be >= 0, got {shift!r}")
    transforms = [(0, 0, 0.0)]
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            if (dy, dx) == (0, 0) or (not diagonal and dy != 0 and dx != 0):
                continue
            transforms.append((dy, dx, 0.0))
    transforms.extend((0, 0, float(angle)) for angle in rotations if angle != 0)
    return transforms


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape
    # Rotate about the tile centre: MNIST digits are centred there by mass.
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def augment(
    X: np.ndarray,
    y: np.ndarray | None = None,
    shift: int = 1,
    rotations: tuple[float, ...] = (),
    diagonal: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Copies of every image, shifted and rotated, with labels and the index of the original.

    Parameters
    ----------
    X : images ``(n, h, w)`` or square rows ``(n, h*w)``; the copies keep ``X``'s dtype
        (uint8 stays uint8: rotated copies are rounded).
    y : labels ``(n,)`` or None.
    shift, rotations, diagonal : see :func:`augmentation_transforms`.

    Returns
    -------
    X_aug : ``(n * n_copies, h, w)``, origin-major (copy ``j`` of image ``i`` at
        ``i * n_copies + j``; copy 0 is the original).
    y_aug : ``y`` repeated per copy, or None.
    origin : int64 ``(n * n_copies,)``, the index in ``X`` each copy came from.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros((2, 28, 28), np.uint8); X[:, 10:18, 12:16] = 255
    >>> X_aug, y_aug, origin = augment(X, np.array([3, 7]), shift=1)
    >>> X_aug.shape, y_aug.tolist()[:10], origin[8:11].tolist()
    ((18, 28, 28), [3, 3, 3, 3, 3, 3, 3, 3, 3, 7], [0, 1, 1])
    """
    dtype = np.asarray(X).dtype
    images = as_images(X, dtype=np.float32)
    transforms = augmentation_transforms(shift, rotations, diagonal)
    n, h, w = images.shape
    if y is not None and len(np.asarray(y)) != n:
        raise ParameterError(f"got {n} images but {len(np.asarray(y))} labels")
    m = len(transforms)
    out = np.empty((n, m, h, w), dtype=np.float32)
    for j, (dy, dx, degrees) in enumerate(transforms):
        if degrees == 0:
            # A shift is a slice copy: do the whole batch at once.
            out[:, j] = 0
            rows_src = slice(max(0, -dy), h - max(0, dy))
            cols_src = slice(max(0, -dx), w - max(0, dx))
            rows_dst = slice(max(0, dy), h - max(0, -dy))
            cols_dst = slice(max(0, dx), w - max(0, -dx))
            out[:, j, rows_dst, cols_dst] = images[:, rows_src, cols_src]
        else:
            for i in range(n):
                out[i, j] = _rotate(images[i], degrees)
    out = out.reshape(n * m, h, w)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(dtype)
    origin = np.repeat(np.arange(n, dtype=np.int64), m)
    y_aug = None if y is None else np.repeat(np.asarray(y), m)
    return out, y_aug, origin
