"""The CNN trained for robustness: MNIST plus distorted copies of its digits.

A model trained on MNIST alone learns the slant, stroke width and proportions of 1990s
American census and school handwriting; photos, drawings and other writers' digits differ in
exactly those respects. :class:`RobustCNNClassifier` (the ``cnn-robust`` model kind) trains
on every image plus copies distorted by :func:`digitrec.features.augment.distort`.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval

from digitrec.errors import ParameterError
from digitrec.features.augment import DISTORTION_LIMITS, DISTORTION_PARAMS, distort
from digitrec.features.transformers import as_images
from digitrec.nets.cnn import CNNClassifier
from digitrec.reading.framing import TILE
from digitrec.validation import check_declared

__all__ = ["RobustCNNClassifier"]


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

    _parameter_constraints: dict = {
        **CNNClassifier._parameter_constraints,
        "copies": [Interval(Integral, 0, None, closed="left")],
        "distortion_seed": [Interval(Integral, 0, None, closed="left")],
        **{
            name: [Interval(Real, low, high, closed="both")]
            for name, (low, high) in DISTORTION_LIMITS.items()
        },
    }

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

    def check_params(self) -> None:
        """Raise ParameterError for a bad parameter: declared ranges, then the two stroke
        probabilities together."""
        check_declared(self)
        if self.thicker + self.thinner > 1:
            raise ParameterError(
                f"thicker and thinner must be probabilities adding up to at most 1, "
                f"got {self.thicker!r} and {self.thinner!r}"
            )

    def _distortion_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DISTORTION_PARAMS}

    def fit(self, X: np.ndarray, y: np.ndarray) -> RobustCNNClassifier:
        """Train on ``X`` (uint8 ``(n, 28, 28)``, 0..255) and ``copies`` distorted copies."""
        self.check_params()
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
        return super().fit(extended, np.tile(y, self.copies + 1))

    def validation_split(self, encoded: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Split the originals (the first of the ``copies + 1`` equal parts :meth:`fit`
        trains on); copies follow their original into training or are dropped."""
        n = len(encoded) // (self.copies + 1)
        train, val = super().validation_split(encoded[:n], seed)
        copies_of_train = [train + k * n for k in range(1, self.copies + 1)]
        return np.concatenate([train, *copies_of_train]), val
