"""scikit-learn transformers on image arrays.

Both transformers (:class:`Deskew`, which also centres, and :class:`GaussianBlur`) accept
images ``(n, h, w)`` (uint8 or float) or flattened square images ``(n, h*w)`` and return
float32 images ``(n, h, w)``, so they can be chained. Pixel values keep their scale (0..255
for MNIST): nothing here divides by 255, so distances stay comparable with raw pixels.

Both are stateless: ``fit`` only records ``n_features_in_`` (pixels per image) and the
image shape, so ``transform`` can reject images of another size.
"""

from __future__ import annotations

import math
from numbers import Real

import cv2
import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from digitrec.errors import ParameterError
from digitrec.validation import check_declared

__all__ = [
    "Deskew",
    "GaussianBlur",
    "as_images",
    "image_moments",
]


def as_images(X: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Return ``X`` as a C-contiguous ``(n, h, w)`` array of ``dtype``.

    ``(n, d)`` input is accepted when ``d`` is a perfect square (MNIST rows of 784 pixels).
    """
    X = np.asarray(X)
    if X.ndim == 2:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1]:
            raise ParameterError(
                f"cannot read rows of {X.shape[1]} values as square images; "
                "pass images shaped (n, h, w)"
            )
        X = X.reshape(X.shape[0], side, side)
    elif X.ndim != 3:
        raise ParameterError(f"expected images (n, h, w) or rows (n, h*w), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ParameterError(f"images must be real numbers, got dtype {X.dtype}")
    return np.ascontiguousarray(X, dtype=dtype)


def image_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre of mass and second central moments of each image.

    Returns ``(mass, centre, cov)``: ``mass (n,)``, ``centre (n, 2)`` as (row, col) and
    ``cov (n, 2, 2)`` with ``cov[:, 0, 1]`` the row/column covariance. Images with no ink get
    the geometric centre and zero covariance instead of NaN.
    """
    images = as_images(images, np.float64)
    n, h, w = images.shape
    rows = np.arange(h, dtype=np.float64)
    cols = np.arange(w, dtype=np.float64)
    row_mass = images.sum(axis=2)  # (n, h)
    col_mass = images.sum(axis=1)  # (n, w)
    mass = row_mass.sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    c_row = row_mass @ rows / safe
    c_col = col_mass @ cols / safe
    var_row = row_mass @ (rows**2) / safe - c_row**2
    var_col = col_mass @ (cols**2) / safe - c_col**2
    cross = np.einsum("nij,i,j->n", images, rows, cols) / safe - c_row * c_col
    empty = mass <= 0
    c_row[empty] = (h - 1) / 2.0
    c_col[empty] = (w - 1) / 2.0
    var_row[empty] = var_col[empty] = cross[empty] = 0.0
    cov = np.empty((n, 2, 2))
    cov[:, 0, 0] = var_row
    cov[:, 1, 1] = var_col
    cov[:, 0, 1] = cov[:, 1, 0] = cross
    return mass, np.stack([c_row, c_col], axis=1), cov


class _ImageTransformer(TransformerMixin, BaseEstimator):
    """Shared ``fit`` for the stateless transformers: remember the image shape only."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _ImageTransformer:
        check_declared(self)
        images = as_images(X)
        self.image_shape_ = images.shape[1:]
        self.n_features_in_ = int(np.prod(self.image_shape_))
        return self

    def _images(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "image_shape_")
        images = as_images(X)
        if images.shape[1:] != self.image_shape_:
            raise ParameterError(
                f"{type(self).__name__} was fitted on images {self.image_shape_}, "
                f"got {images.shape[1:]}"
            )
        return images

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags

    # The model store saves digitrec estimators through these two (no pickles).
    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        check_is_fitted(self, "image_shape_")
        return {"image_shape": [int(s) for s in self.image_shape_]}, {}

    def import_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        self.image_shape_ = tuple(int(s) for s in state["image_shape"])
        self.n_features_in_ = int(np.prod(self.image_shape_))


def _warp_each(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply one inverse affine map per image (``dst -> src``, cv2 x/y order), bilinear.

    A per-image loop calling cv2 costs about 5 us an image; pixels outside the source are 0.
    """
    n, h, w = images.shape
    out = np.empty_like(images)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for i in range(n):
        out[i] = cv2.warpAffine(
            images[i], matrices[i], (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT
        )
    return out


def _target_centre(shape: tuple[int, int]) -> tuple[float, float]:
    # MNIST centres digits by mass on pixel (14, 14) of 28x28: keep that convention.
    return shape[0] / 2.0, shape[1] / 2.0


class Deskew(_ImageTransformer):
    """Remove the slant of each digit by a shear computed from its image moments.

    The classic moment deskewing: with ``alpha = cov(row, col) / var(row)``, column ``c`` of
    output row ``r`` is read from column ``c + alpha * (r - centre_row)`` of the input, which
    makes the row/column covariance of the result (close to) zero; the centre of mass is moved
    to ``(h/2, w/2)`` at the same time. ``max_shear`` caps ``|alpha|`` so that a degenerate
    image (a single horizontal stroke, where ``var(row)`` is tiny) is not smeared across the
    tile.
    """

    _parameter_constraints: dict = {"max_shear": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, max_shear: float = 2.0) -> None:
        self.max_shear = max_shear

    def transform(self, X: np.ndarray) -> np.ndarray:
        images = self._images(X)
        _, centre, cov = image_moments(images)
        var_row = cov[:, 0, 0]
        alpha = np.divide(cov[:, 0, 1], var_row, out=np.zeros_like(var_row), where=var_row > 1e-2)
        alpha = np.clip(alpha, -self.max_shear, self.max_shear)
        t_row, t_col = _target_centre(images.shape[1:])
        # dst (x=col, y=row) -> src: x_src = x + alpha * (y - t_row) + c_col - t_col
        matrices = np.zeros((len(images), 2, 3), np.float64)
        matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0
        matrices[:, 0, 1] = alpha
        matrices[:, 0, 2] = centre[:, 1] - t_col - alpha * t_row
        matrices[:, 1, 2] = centre[:, 0] - t_row
        return _warp_each(images, matrices)


class GaussianBlur(_ImageTransformer):
    """Gaussian blur with standard deviation ``sigma`` pixels (``0`` leaves images unchanged).

    Pixels beyond the border count as 0, so ink well inside the tile (MNIST keeps a 4-pixel
    margin) keeps its total mass.
    """

    _parameter_constraints: dict = {"sigma": [Interval(Real, 0, None, closed="left")]}

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = sigma

    def transform(self, X: np.ndarray) -> np.ndarray:
        images = self._images(X)
        if self.sigma == 0:
            return images
        # One call on the whole batch; sigma 0 on the sample axis keeps images independent.
        return ndimage.gaussian_filter(
            images, sigma=(0.0, self.sigma, self.sigma), mode="constant", truncate=3.0
        )
