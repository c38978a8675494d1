"""Training-time robustness: MNIST digits distorted the way other people's handwriting differs.

A model trained on MNIST alone learns the slant, stroke width and proportions of 1990s
American census and school handwriting. Photos, canvas drawings and other writers' digits
(:mod:`digitrec.testing.synthetic`, the UCI set) differ in exactly those respects, so the training
images are given random, label-preserving deformations:

- an affine map: rotation, shear (slant) and unequal horizontal/vertical scaling;
- an elastic distortion (Simard, Steinkraus and Platt, "Best practices for convolutional
  neural networks applied to visual document analysis", ICDAR 2003): a random displacement
  field smoothed by a Gaussian, which bends strokes the way a different hand would;
- a change of stroke width: a grey-level dilation or erosion by one pixel.

Every distorted digit is then framed again as MNIST frames digits, and as
:mod:`digitrec.reading.segment` frames the digits it cuts out of images: the longer side of its
box scaled to 20 pixels, the centre of mass on pixel (14, 14). Without that, a sheared or
stretched copy would teach the model digit sizes and positions that it never sees at
prediction time.

:func:`distort` is the building block; :class:`RobustCNNClassifier` is the CNN trained on
MNIST plus distorted copies (registered as the ``cnn-robust`` model kind).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from digitrec.errors import ParameterError
from digitrec.features.transformers import as_images
from digitrec.nets.cnn import CNNClassifier
from digitrec.reading.segment import BOX, TILE, centre_by_mass

__all__ = ["RobustCNNClassifier", "distort", "frame_like_mnist"]

# Pixels at or below this grey level do not count as ink when the digit is framed again:
# bilinear resampling leaves faint halos that would widen the box.
_INK_LEVEL = 32
# An erosion that removes more than this share of a digit's ink has erased strokes, not
# thinned them; such a copy keeps its original width.
_MIN_INK_KEPT = 0.45
# distort()'s keyword arguments, which RobustCNNClassifier takes as parameters too.
_DISTORTION_PARAMS = (
    "max_degrees",
    "max_shear",
    "max_stretch",
    "elastic_pixels",
    "elastic_sigma",
    "thicker",
    "thinner",
)


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
    _check_distortion(max_degrees, max_shear, max_stretch, elastic_pixels, elastic_sigma)
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


def _check_distortion(
    max_degrees: float,
    max_shear: float,
    max_stretch: float,
    elastic_pixels: float,
    elastic_sigma: float,
) -> None:
    limits = {
        "max_degrees": (max_degrees, 0, 45),
        "max_shear": (max_shear, 0, 1),
        "max_stretch": (max_stretch, 0, 0.5),
        "elastic_pixels": (elastic_pixels, 0, 4),
        "elastic_sigma": (elastic_sigma, 0.5, 10),
    }
    for name, (value, low, high) in limits.items():
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


def frame_like_mnist(tile: np.ndarray) -> np.ndarray:
    """A grey digit on black -> uint8 28x28 with its box's longer side 20 px and its centre
    of mass on pixel (14, 14), as MNIST and :mod:`digitrec.reading.segment` frame digits.

    An image with no ink comes back black.
    """
    grey = np.clip(np.asarray(tile, dtype=np.float32), 0, 255)
    rows = np.flatnonzero((grey > _INK_LEVEL).any(axis=1))
    cols = np.flatnonzero((grey > _INK_LEVEL).any(axis=0))
    if rows.size == 0:
        return np.zeros((TILE, TILE), np.uint8)
    crop = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    factor = BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    shrinking = factor < 1
    digit = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    digit = np.clip(digit, 0, 255)
    if float(digit.sum()) <= 0:
        return np.zeros((TILE, TILE), np.uint8)
    return centre_by_mass(digit, full_scale=1.0)


class RobustCNNClassifier(CNNClassifier):
    """:class:`~digitrec.nets.cnn.CNNClassifier` trained on the images plus ``copies`` distorted
    copies of each (:func:`distort`), so it reads handwriting unlike MNIST's.

    The validation split that picks the best epoch holds undistorted original images only,
    and none of their copies is trained on: the epoch is chosen by accuracy on plain
    held-out digits, and no distorted twin of a validation image leaks into training.

    Parameters
    ----------
    copies : int, default=1
        Distorted copies per training image, made once before training (the network's own
        small random affine augmentation still runs on every image each epoch).
    distortion_seed : int, default=0
        Seeds the copies (the network's ``seed`` seeds everything else).
    max_degrees, max_shear, max_stretch, elastic_pixels, elastic_sigma, thicker, thinner :
        passed to :func:`distort`.
    All other parameters are :class:`~digitrec.nets.cnn.CNNClassifier`'s.
    """

    def __init__(
        self,
        epochs: int = 6,
        batch_size: int = 128,
        learning_rate: float = 0.005,
        validation_fraction: float = 0.1,
        patience: int = 3,
        seed: int | None = 0,
        augment: bool = True,
        n_threads: int | None = None,
        verbose: bool = False,
        copies: int = 1,
        distortion_seed: int = 0,
        max_degrees: float = 12.0,
        max_shear: float = 0.3,
        max_stretch: float = 0.15,
        elastic_pixels: float = 1.2,
        elastic_sigma: float = 4.0,
        thicker: float = 0.25,
        thinner: float = 0.15,
    ) -> None:
        super().__init__(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            validation_fraction=validation_fraction,
            patience=patience,
            seed=seed,
            augment=augment,
            n_threads=n_threads,
            verbose=verbose,
        )
        self.copies = copies
        self.distortion_seed = distortion_seed
        self.max_degrees = max_degrees
        self.max_shear = max_shear
        self.max_stretch = max_stretch
        self.elastic_pixels = elastic_pixels
        self.elastic_sigma = elastic_sigma
        self.thicker = thicker
        self.thinner = thinner

    def _check_params(self) -> None:
        super()._check_params()
        for name in ("copies", "distortion_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ParameterError(f"{name} must be an integer >= 0; got {value!r}")
        _check_distortion(
            self.max_degrees,
            self.max_shear,
            self.max_stretch,
            self.elastic_pixels,
            self.elastic_sigma,
        )

    def _distortion_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _DISTORTION_PARAMS}

    def fit(self, X: np.ndarray, y: np.ndarray) -> RobustCNNClassifier:
        """Train on ``X`` (uint8 ``(n, 28, 28)``, 0..255) and ``copies`` distorted copies."""
        self._check_params()
        images = as_images(X, dtype=np.float32)
        if images.shape[1:] != (TILE, TILE):
            raise ValueError(f"images must be (n, 28, 28) or (n, 784); got {images.shape}")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(images):
            raise ValueError(f"y must be 1-D with one label per image; got shape {y.shape}")
        rng = np.random.default_rng(self.distortion_seed)
        source = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        distorted = [distort(source, rng, **self._distortion_params()) for _ in range(self.copies)]
        extended = np.concatenate([source, *distorted])
        del images, distorted
        # _validation_split needs to know which rows are originals; only during this fit.
        self._n_originals = len(source)
        try:
            return super().fit(extended, np.tile(y, self.copies + 1))
        finally:
            del self._n_originals

    def _validation_split(self, encoded: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Split the originals; copies follow their original into training or are dropped."""
        n = self._n_originals
        train, val = super()._validation_split(encoded[:n], seed)
        copies_of_train = [train + k * n for k in range(1, self.copies + 1)]
        return np.concatenate([train, *copies_of_train]), val
