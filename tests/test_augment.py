"""Reference-set augmentation: copies, labels and the way back to the original image."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.errors import ParameterError
from digitrec.features.augment import augment, augmentation_transforms


def digits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = np.zeros((4, 28, 28), np.uint8)
    X[:, 6:22, 8:20] = rng.integers(1, 256, size=(4, 16, 12))
    return X, np.array([7, 1, 7, 3])


def test_shapes_labels_and_origins():
    X, y = digits()
    X_aug, y_aug, origin = augment(X, y, shift=1)
    assert X_aug.shape == (36, 28, 28) and X_aug.dtype == np.uint8
    np.testing.assert_array_equal(origin, np.repeat(np.arange(4), 9))
    np.testing.assert_array_equal(y_aug, y[origin])
    # copy 0 of every image is the image itself
    np.testing.assert_array_equal(X_aug[::9], X)


def test_copies_are_the_listed_shifts():
    X, y = digits()
    X_aug, _, origin = augment(X, y, shift=2, diagonal=False)
    transforms = augmentation_transforms(shift=2, diagonal=False)
    assert len(transforms) == 9 and len(X_aug) == 4 * 9
    for j, (dy, dx, _) in enumerate(transforms):
        copy = X_aug[2 * 9 + j]
        # the ink sits well inside the tile, so a shift is a roll with nothing wrapping
        np.testing.assert_array_equal(copy, np.roll(X[2], (dy, dx), axis=(0, 1)))
    assert np.all(origin[18:27] == 2)


def test_rotated_copies_keep_most_ink():
    X, y = digits()
    X_aug, y_aug, origin = augment(X, y, shift=0, rotations=(-10.0, 10.0))
    assert len(X_aug) == 12 and np.all(y_aug == np.repeat(y, 3))
    mass = X_aug.reshape(4, 3, -1).astype(np.float64).sum(axis=2)
    np.testing.assert_allclose(mass[:, 1:], np.repeat(mass[:, :1], 2, axis=1), rtol=0.03)
    assert not np.array_equal(X_aug[1], X_aug[0])


def test_works_without_labels_and_rejects_mismatched_ones():
    X, y = digits()
    _, y_aug, origin = augment(X, None, shift=1)
    assert y_aug is None and len(origin) == 36
    with pytest.raises(ParameterError):
        augment(X, y[:3], shift=1)
    with pytest.raises(ParameterError):
        augment(X, y, shift=-1)
