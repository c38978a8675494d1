"""Wavelet scattering features of digit images, as a scikit-learn transformer.

The scattering transform (Bruna & Mallat, "Invariant scattering convolution networks", PAMI
2013) cascades Morlet wavelet filters and moduli and averages the result over ``2**scales``
pixels: the coefficients are stable to small deformations and carry the stroke directions
that pixels spread over many dimensions. No weights are learned. digitrec uses kymatio's
Morlet filters and its algorithm, batched over paths. The coefficients are log-compressed,
standardised and projected on their first principal components, fitted on the training
images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from numbers import Integral

import numpy as np
from scipy import fft
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from digitrec import progress
from digitrec.errors import ModelFileError, ParameterError
from digitrec.features.transformers import as_images
from digitrec.validation import check_declared

__all__ = ["ScatteringFeatures", "scattering_coefficients"]

# Images per batch: the largest intermediate is (batch, L, L, 40, 40) complex64 for 28x28
# digits, 105 MB at 128 images.
_BATCH = 128
# log(c + eps): the small coefficients of blank regions vary over decades that carry no
# shape; eps caps the range (chosen on the MNIST validation split with 1e-3 against sqrt).
_LOG_EPS = 1e-3
_FILTERS: dict = {}


@dataclass(frozen=True)
class _FilterBank:
    """kymatio's Morlet filters for one image shape, in the Fourier domain, complex64."""

    scales: int
    pad: Callable[[np.ndarray], np.ndarray]
    lowpass: list[np.ndarray]  # the low-pass filter at each resolution 2**j
    # wavelets[j][res]: the ``angles`` wavelets of scale j at resolution 2**res, (L, m, m)
    wavelets: list[list[np.ndarray]]
    n_coefficients: int = 0  # per image, set once the bank is built


def _filter_bank(shape: tuple[int, int], scales: int, angles: int) -> _FilterBank:
    # kymatio's package-level `kymatio.numpy` also imports its 3-D transform, which needs a
    # scipy function removed in scipy 1.15; the 2-D front end alone does not.
    from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D

    key = (shape, scales, angles)
    if key not in _FILTERS:  # building the filters takes ~0.1 s
        ref = ScatteringNumPy2D(J=scales, shape=shape, L=angles)
        wavelets = []
        for j in range(scales):
            of_scale = [p["levels"] for p in ref.psi if p["j"] == j]
            wavelets.append(
                [
                    np.stack([levels[res] for levels in of_scale]).astype(np.complex64)
                    for res in range(len(of_scale[0]))  # the resolutions kymatio uses
                ]
            )
        lowpass = [np.asarray(level).astype(np.complex64) for level in ref.phi["levels"]]
        bank = _FilterBank(scales, ref.pad, lowpass, wavelets)
        blank = _scatter(bank, np.zeros((1, *shape), np.float32))
        _FILTERS[key] = replace(bank, n_coefficients=blank.shape[1])
    return _FILTERS[key]


def _subsample(x: np.ndarray, k: int) -> np.ndarray:
    """Spatial subsampling by ``k`` done in the Fourier domain (periodisation)."""
    if k == 1:
        return x
    m, n = x.shape[-2:]
    return x.reshape(*x.shape[:-2], k, m // k, k, n // k).mean(axis=(-4, -2))


def _modulus_spectrum(x: np.ndarray) -> np.ndarray:
    return fft.fft2(np.abs(fft.ifft2(x)))


def _scatter(bank: _FilterBank, images: np.ndarray) -> np.ndarray:
    """kymatio's ``scattering2d`` (2nd order, array output), every path of a scale pair in
    one batched step instead of one path at a time: the same numbers, 0.2 ms instead of
    17 ms of Python overhead for one image."""
    J = bank.scales

    def averaged(spectrum: np.ndarray, res: int) -> np.ndarray:
        low = _subsample(spectrum * bank.lowpass[res], 2 ** (J - res))
        return fft.ifft2(low).real[..., 1:-1, 1:-1]

    n = len(images)
    u0 = fft.fft2(bank.pad(images))
    first, second, u1 = [], [], []
    for j1 in range(J):
        u1.append(_modulus_spectrum(_subsample(u0[:, None] * bank.wavelets[j1][0], 2**j1)))
        first.append(averaged(u1[j1], j1))
    for j1 in range(J):
        paths = [
            averaged(
                _modulus_spectrum(
                    _subsample(u1[j1][:, :, None] * bank.wavelets[j2][j1], 2 ** (j2 - j1))
                ),
                j2,
            )
            for j2 in range(j1 + 1, J)
        ]
        if paths:  # (n, L1, L2 * (J - j1 - 1), a, b): kymatio's order, theta1 then (j2, theta2)
            block = np.concatenate(paths, axis=2)
            second.append(block.reshape(n, -1, *block.shape[-2:]))
    s0 = averaged(u0, 0)[:, None]
    out = np.concatenate([s0, *first, *second], axis=1)
    return out.reshape(n, -1)


def scattering_coefficients(
    images: np.ndarray, scales: int = 3, angles: int = 8, show_progress: bool = False
) -> np.ndarray:
    """Second-order scattering coefficients ``(n, d)`` float32 of images in 0..255.

    ``show_progress`` draws a bar when :mod:`digitrec.progress` is on (fitting: minutes for
    MNIST); predictions leave it off so that it does not nest inside the caller's bar."""
    imgs = as_images(images)
    n, h, w = imgs.shape
    if min(h, w) < 2**scales:
        raise ParameterError(f"images {h}x{w} are smaller than 2**scales = {2**scales}")
    bank = _filter_bank((h, w), scales, angles)
    out = np.empty((n, bank.n_coefficients), np.float32)

    def fill(start: int) -> None:
        # Scaled batch by batch: a scaled copy of 60,000 digits would be 188 MB.
        out[start : start + _BATCH] = _scatter(bank, imgs[start : start + _BATCH] / np.float32(255))

    starts = range(0, n, _BATCH)
    if len(starts) <= 1:
        list(map(fill, starts))
        return out
    enabled = None if show_progress else False
    with (
        progress.bar(total=n, desc="scattering transform", unit="image", enabled=enabled) as bar,
        ThreadPoolExecutor(os.cpu_count()) as pool,  # FFTs and reductions release the GIL
    ):
        for start in pool.map(lambda s: fill(s) or s, starts):
            bar.update(min(_BATCH, n - start))
    return out


class ScatteringFeatures(TransformerMixin, BaseEstimator):
    """Scattering coefficients, log-compressed, standardised and PCA-projected.

    Parameters
    ----------
    scales : wavelet octaves ``J``; coefficients are averaged over ``2**scales`` pixels.
    angles : wavelet orientations ``L``.
    n_components : PCA dimensions kept (None keeps every coefficient).
    """

    _parameter_constraints: dict = {
        "scales": [Interval(Integral, 1, None, closed="left")],
        "angles": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, scales: int = 3, angles: int = 8, n_components: int | None = 300) -> None:
        self.scales = scales
        self.angles = angles
        self.n_components = n_components

    def _standard(self, images: np.ndarray, fit: bool = False) -> np.ndarray:
        # In place throughout: 60,000 MNIST digits have 470 MB of coefficients.
        coefs = scattering_coefficients(images, self.scales, self.angles, show_progress=fit)
        coefs += np.float32(_LOG_EPS)
        np.log(coefs, out=coefs)
        if fit:
            self.mean_ = coefs.mean(axis=0, dtype=np.float64).astype(np.float32)
            self.scale_ = np.sqrt(_mean_square(coefs, self.mean_)).astype(np.float32) + 1e-6
        coefs -= self.mean_
        coefs /= self.scale_
        return coefs

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> ScatteringFeatures:
        self._fit_transform(X)
        return self

    def fit_transform(self, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        # One pass of the transform, not fit's and transform's: it is the slow part.
        return self._fit_transform(X)

    def _fit_transform(self, X: np.ndarray) -> np.ndarray:
        check_declared(self)
        images = as_images(X)
        if len(images) == 0:
            raise ParameterError("cannot fit on 0 images")
        self.image_shape_ = tuple(images.shape[1:])
        standard = self._standard(images, fit=True)
        n = self.n_components
        if n is not None and n < standard.shape[1]:
            # Exact PCA from the covariance (d x d, 30 MB for d = 1,953), accumulated in
            # chunks: the data are centred already, and no copy of them is made.
            cov = np.zeros((standard.shape[1],) * 2)
            for start in range(0, len(standard), _BATCH * 32):
                chunk = standard[start : start + _BATCH * 32]
                cov += chunk.T @ chunk
            _, vectors = np.linalg.eigh(cov)
            self.components_ = np.ascontiguousarray(vectors[:, ::-1][:, :n].T, np.float32)
        else:
            self.components_ = None
        return self._project(standard)

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mean_")
        images = as_images(X)
        if tuple(images.shape[1:]) != self.image_shape_:
            raise ParameterError(f"fitted on images {self.image_shape_}, got {images.shape[1:]}")
        return self._project(self._standard(images))

    def _project(self, standard: np.ndarray) -> np.ndarray:
        return standard if self.components_ is None else standard @ self.components_.T

    # -- model store ------------------------------------------------------------------

    def export_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        check_is_fitted(self, "mean_")
        arrays = {"mean": self.mean_, "scale": self.scale_}
        if self.components_ is not None:
            arrays["components"] = self.components_
        return {"image_shape": list(self.image_shape_)}, arrays

    def import_state(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        check_declared(self)
        try:
            shape = tuple(int(s) for s in state["image_shape"])
            mean = np.asarray(arrays["mean"], np.float32)
            scale = np.asarray(arrays["scale"], np.float32)
            components = arrays.get("components")
            components = None if components is None else np.asarray(components, np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"ScatteringFeatures state is incomplete: {exc}") from exc
        if len(shape) != 2 or min(shape) < 2**self.scales:
            raise ModelFileError(f"ScatteringFeatures state: bad image shape {shape}")
        d = _filter_bank(shape, self.scales, self.angles).n_coefficients
        if (
            mean.shape != (d,)
            or scale.shape != (d,)
            or not np.all(scale > 0)
            or (components is not None and (components.ndim != 2 or components.shape[1] != d))
        ):
            raise ModelFileError("ScatteringFeatures state: array shapes do not match")
        self.image_shape_ = shape
        self.mean_, self.scale_, self.components_ = mean, scale, components


def _mean_square(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Column means of ``(x - mean)**2`` in float64, chunk by chunk (no copy of ``x``)."""
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), _BATCH * 32):
        chunk = x[start : start + _BATCH * 32] - mean
        total += np.einsum("ij,ij->j", chunk, chunk, dtype=np.float64)
    return total / len(x)
