"""Perturbed copies of training images: reference-set augmentation and distortions.

**Augmentation** (:func:`augment`): shifted and slightly rotated copies of training images.

A nearest-neighbour classifier only knows the positions and slants its references show;
adding copies of each reference moved by a pixel (or turned by a few degrees) lets a query
match a training digit drawn slightly off-centre. Every copy remembers the index of the
image it came from, so a neighbour found among the copies is still explained by a real
training image.

The copies are laid out **origin-major**: copy ``j`` of image ``i`` sits at row
``i * n_copies + j``, and copy 0 is the unchanged image. A search over the augmented set can
therefore reduce the distances of one image's copies with a reshape
``(n, n_copies)`` and a ``min``.

**Distortions** (:func:`distort`): MNIST digits distorted the way other people's handwriting
differs. A model trained on MNIST alone learns the slant, stroke width and proportions of
1990s American census and school handwriting; photos, canvas drawings and other writers'
digits differ in exactly those respects, so training images are given random,
label-preserving deformations:

- an affine map: rotation, shear (slant) and unequal horizontal/vertical scaling;
- an elastic distortion (Simard, Steinkraus and Platt, "Best practices for convolutional
  neural networks applied to visual document analysis", ICDAR 2003): a random displacement
  field smoothed by a Gaussian, which bends strokes the way a different hand would;
- a change of stroke width: a grey-level dilation or erosion by one pixel.

Every distorted digit is then framed again as MNIST frames digits
(:func:`digitrec.reading.framing.frame_like_mnist`). Without that, a sheared or stretched
copy would teach the model digit sizes and positions that it never sees at prediction time.
"""

from __future__ import annotations

from numbers import Real

import cv2
import numpy as np
from scipy import ndimage

from digitrec.errors import ParameterError
from digitrec.features.transformers import as_images
from digitrec.reading.framing import TILE, frame_like_mnist

__all__ = [
    "DISTORTION_LIMITS",
    "DISTORTION_PARAMS",
    "augment",
    "augmentation_transforms",
    "check_distortion",
    "distort",
]

# An erosion that removes more than this share of a digit's ink has erased strokes, not
# thinned them; such a copy keeps its original width.
_MIN_INK_KEPT = 0.45
# The range of each of distort()'s keyword arguments (thicker and thinner are probabilities),
# which RobustCNNClassifier takes as parameters too.
DISTORTION_LIMITS = {
    "max_degrees": (0, 45),
    "max_shear": (0, 1),
    "max_stretch": (0, 0.5),
    "elastic_pixels": (0, 4),
    "elastic_sigma": (0.5, 10),
    "thicker": (0, 1),
    "thinner": (0, 1),
}
DISTORTION_PARAMS = tuple(DISTORTION_LIMITS)


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


# --- distortions: how other people's handwriting differs from MNIST's -------------------


def distort(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    max_degrees: float = 12.0,
    max_shear: float = 0.3,
    max_stretch: float = 0.15,
    elastic_pixels: float = 1.2,
    elastic_sigma: float = 4.0,
    thicker: float = 0.25,
    thinner: float = 0.15,
) -> np.ndarray:
    """One randomly distorted, re-framed copy of every image.

    Parameters
    ----------
    images : uint8 ``(n, 28, 28)`` (or rows ``(n, 784)``), white ink on black, 0..255.
    rng : the source of randomness; the same generator state gives the same copies.
    max_degrees : rotation drawn uniformly from ``±max_degrees``.
    max_shear : horizontal shear (slant) drawn from ``±max_shear`` (0.3 is about 17°).
    max_stretch : width and height scaled independently by ``1 ± max_stretch``; only the
        ratio survives the re-framing, so this makes digits narrower or wider.
    elastic_pixels : standard deviation, in pixels, of the elastic displacement field.
    elastic_sigma : smoothness (Gaussian sigma, pixels) of that field; Simard et al. used 4.
    thicker, thinner : probability that a copy's strokes are dilated / eroded by one pixel.

    Returns
    -------
    uint8 ``(n, 28, 28)``: each digit's longer side 20 pixels, centre of mass at (14, 14).

    Examples
    --------
    >>> import numpy as np
    >>> one = np.zeros((1, 28, 28), np.uint8); one[4:24, 13:16] = 255
    >>> copy = distort(one, np.random.default_rng(0))
    >>> copy.shape, copy.dtype, bool(copy.any())
    ((1, 28, 28), dtype('uint8'), True)
    """
    check_distortion(max_degrees, max_shear, max_stretch, elastic_pixels, elastic_sigma)
    if not (0 <= thicker <= 1 and 0 <= thinner <= 1 and thicker + thinner <= 1):
        raise ParameterError(
            f"thicker and thinner must be probabilities adding up to at most 1, "
            f"got {thicker!r} and {thinner!r}"
        )
    tiles = as_images(images, dtype=np.float32)
    if tiles.shape[1:] != (TILE, TILE):
        raise ParameterError(f"distort takes 28x28 MNIST-format images, got {tiles.shape[1:]}")
    n = len(tiles)
    map_y, map_x = _affine_maps(rng, n, max_degrees, max_shear, max_stretch)
    if elastic_pixels > 0:
        dy, dx = _elastic_fields(rng, n, elastic_pixels, elastic_sigma)
        map_y += dy
        map_x += dx
    index = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], map_y.shape)
    # One vectorised bilinear resampling of the whole batch; outside the tile is black.
    warped = ndimage.map_coordinates(
        tiles, np.stack([index, map_y, map_x]), order=1, mode="constant", cval=0.0
    )
    width = rng.random(n)
    cross = np.zeros((1, 3, 3), bool)
    cross[0, 1, :] = cross[0, :, 1] = True
    thick = width < thicker
    if thick.any():
        warped[thick] = ndimage.grey_dilation(warped[thick], footprint=cross)
    thin = (width >= thicker) & (width < thicker + thinner)
    if thin.any():
        thinned = ndimage.grey_erosion(warped[thin], footprint=cross)
        kept = thinned.sum(axis=(1, 2)) >= _MIN_INK_KEPT * warped[thin].sum(axis=(1, 2))
        rows = np.flatnonzero(thin)[kept]
        warped[rows] = thinned[kept]
    return np.stack([frame_like_mnist(tile) for tile in warped]) if n else warped.astype(np.uint8)


def check_distortion(
    max_degrees: float,
    max_shear: float,
    max_stretch: float,
    elastic_pixels: float,
    elastic_sigma: float,
) -> None:
    """Raise ParameterError unless every distortion strength is within its range."""
    values = dict(
        max_degrees=max_degrees,
        max_shear=max_shear,
        max_stretch=max_stretch,
        elastic_pixels=elastic_pixels,
        elastic_sigma=elastic_sigma,
    )
    for name, value in values.items():
        low, high = DISTORTION_LIMITS[name]
        if not (isinstance(value, Real) and low <= value <= high):
            raise ParameterError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _affine_maps(
    rng: np.random.Generator, n: int, max_degrees: float, max_shear: float, max_stretch: float
) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of every output pixel, ``(n, 28, 28)`` each, under a random
    rotation, shear and stretch about the tile centre (the inverse map resampling needs)."""
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    shear = rng.uniform(-max_shear, max_shear, n)
    stretch = 1.0 + rng.uniform(-max_stretch, max_stretch, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)
    shearing = np.zeros((n, 2, 2))
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1.0
    shearing[:, 0, 1] = shear
    scaling = np.zeros((n, 2, 2))
    scaling[:, 0, 0], scaling[:, 1, 1] = stretch[:, 0], stretch[:, 1]
    # Forward map in (x, y) = (column, row) order; its inverse gives source coordinates.
    inverse = np.linalg.inv(rotation @ shearing @ scaling).astype(np.float32)
    centre = np.float32((TILE - 1) / 2.0)
    grid_y, grid_x = np.mgrid[0:TILE, 0:TILE].astype(np.float32) - centre
    map_x = inverse[:, 0, 0, None, None] * grid_x + inverse[:, 0, 1, None, None] * grid_y
    map_y = inverse[:, 1, 0, None, None] * grid_x + inverse[:, 1, 1, None, None] * grid_y
    return map_y + centre, map_x + centre


def _elastic_fields(
    rng: np.random.Generator, n: int, pixels: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement fields whose components have standard deviation
    ``pixels``: white noise blurred by a Gaussian, then rescaled per image (Simard et al.
    scaled by a fixed alpha instead, which makes the strength depend on sigma)."""
    noise = rng.uniform(-1.0, 1.0, size=(n, 2, TILE, TILE)).astype(np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma), mode="reflect")
    spread = smooth.std(axis=(2, 3), keepdims=True)
    smooth *= np.float32(pixels) / np.maximum(spread, np.float32(1e-6))
    return smooth[:, 0], smooth[:, 1]
