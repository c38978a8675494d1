"""The image transformers: deskew (and centre), blur."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from digitrec.errors import ParameterError
from digitrec.features.transformers import (
    Deskew,
    GaussianBlur,
    as_images,
    image_moments,
)
from digitrec.persistence import serialize


def skew(images: np.ndarray) -> np.ndarray:
    _, _, cov = image_moments(images)
    return cov[:, 0, 1] / cov[:, 0, 0]


def upright_strokes() -> np.ndarray:
    """Three upright, mirror-symmetric strokes (zero skew): a '1', a 'T' and a box."""
    imgs = np.zeros((3, 28, 28), np.uint8)
    imgs[0, 5:23, 13:16] = 255
    imgs[1, 5:23, 13:16] = 255
    imgs[1, 5:8, 8:21] = 255
    imgs[2, 6:22, 9:12] = imgs[2, 6:22, 16:19] = 255
    imgs[2, 6:9, 9:19] = imgs[2, 19:22, 9:19] = 255
    return imgs


def shear(images: np.ndarray, alpha: float) -> np.ndarray:
    """Slant like handwriting: column moves by alpha * (row - 14)."""
    matrix = np.array([[1.0, alpha, -alpha * 14], [0.0, 1.0, 0.0]])
    return np.stack([cv2.warpAffine(im, matrix, (28, 28)) for im in images])


@pytest.mark.parametrize("alpha", [-0.5, 0.35])
def test_deskew_makes_a_sheared_digit_upright(alpha):
    slanted = shear(upright_strokes(), alpha)
    assert np.all(np.abs(skew(slanted)) > 0.25)
    straight = Deskew().fit_transform(slanted)
    assert straight.dtype == np.float32 and straight.shape == slanted.shape
    assert np.all(np.abs(skew(straight)) < 0.03)
    # It undoes the shear rather than inventing a new shape.
    reference = Deskew().fit_transform(upright_strokes())  # upright already: only centred
    overlap = (straight * reference).sum((1, 2)) / np.sqrt(
        (straight**2).sum((1, 2)) * (reference**2).sum((1, 2))
    )
    assert np.all(overlap > 0.9)


def test_deskew_straightens_real_digits(mnist):
    X = mnist.X_train[:500]
    before = np.abs(skew(X))
    after = np.abs(skew(Deskew().fit_transform(X)))
    assert before.mean() > 0.15
    assert after.mean() < 0.02


def test_deskew_leaves_blank_images_blank():
    out = Deskew().fit_transform(np.zeros((2, 28, 28), np.uint8))
    assert np.all(out == 0) and np.all(np.isfinite(out))


def test_blur_preserves_mass_and_spreads_ink():
    img = upright_strokes().astype(np.float32)
    out = GaussianBlur(sigma=1.5).fit_transform(img)
    np.testing.assert_allclose(out.sum((1, 2)), img.sum((1, 2)), rtol=1e-4)
    assert out.max() < img.max()
    assert (out > 0).sum() > (img > 0).sum()
    np.testing.assert_array_equal(GaussianBlur(sigma=0).fit_transform(img), img)


def test_transformers_accept_images_and_square_rows_only():
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(
        GaussianBlur(0).fit_transform(imgs.reshape(2, 784)), GaussianBlur(0).fit_transform(imgs)
    )
    with pytest.raises(ParameterError):
        as_images(np.zeros((2, 783)))


def test_transform_rejects_images_of_another_size():
    step = Deskew().fit(np.zeros((1, 28, 28)))
    with pytest.raises(ParameterError):
        step.transform(np.zeros((1, 16, 16)))


def test_transformers_chain_in_a_pipeline_and_clone():
    pipe = make_pipeline(Deskew(max_shear=1.5), GaussianBlur(0.8))
    out = clone(pipe).fit_transform(upright_strokes())
    assert out.shape == (3, 28, 28)
    assert clone(pipe).get_params()["deskew__max_shear"] == 1.5


def test_bad_parameters_are_named():
    with pytest.raises(ParameterError, match="sigma"):
        GaussianBlur(sigma=-1).fit_transform(upright_strokes())


def test_a_fitted_pipeline_survives_the_model_store_state_round_trip():
    pipe = make_pipeline(Deskew(), GaussianBlur(1.0))
    X = shear(upright_strokes(), 0.3)
    expected = pipe.fit_transform(X)
    state, arrays = serialize.export_state(pipe)
    fresh = serialize.import_state(clone(pipe), state, arrays)
    np.testing.assert_array_equal(fresh.transform(X), expected)
